"""The pipeline as a Prefect flow: one task per DVC stage, in DVC's order.

Each task asks DVC to reproduce exactly its stage (`dvc repro --single-item`), so DVC alone
decides what is stale and writes dvc.lock: a flow run and `dvc repro` are interchangeable
and either resumes what the other left (specs/prefect-dvc.md, approach A). Prefect adds
retries, per-stage logs and the UI; it caches nothing of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from cotflow.config import PipelineConfig, load_params
from cotflow.layout import STAGES, Layout
from cotflow.records import read_json


def stage_order(cfg: PipelineConfig) -> list[str]:
    """DVC stage names in execution order: prepare, then each iteration's seven stages."""
    return ["prepare"] + [f"{s}@{k}" for k in cfg.iteration_keys() for s in STAGES]


@task(name="dvc-stage", task_run_name="{stage}", retries=1, retry_delay_seconds=5)
def reproduce_stage(root: str, stage: str) -> None:
    logger = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip():
            logger.info(line.rstrip())
    if proc.wait():
        raise RuntimeError(f"dvc repro {stage} exited with code {proc.returncode}")


@flow(name="cotflow-pipeline")
def pipeline(root: str) -> dict[str, Any]:
    """Run (or resume) every stage; return the last iteration's held-out metrics."""
    from cotflow.tracking import PARENT_ENV, start_parent

    root_path = Path(root)
    cfg = load_params(root_path / "params.yaml")
    parent = start_parent(cfg, root_path) if cfg.tracking.enabled else None
    if parent:
        os.environ[PARENT_ENV] = parent  # the stages' child runs hang under this run
    status = "FAILED"
    try:
        for stage in stage_order(cfg):
            reproduce_stage(root, stage)
        status = "FINISHED"
    finally:
        if parent:
            os.environ.pop(PARENT_ENV, None)
            _close(cfg, root_path, parent, status)
    last = cfg.iteration_keys()[-1]
    return read_json(Layout(root_path).iteration(last, cfg.iterations[last].prev).metrics)


def _close(cfg: PipelineConfig, root: Path, run_id: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    from cotflow.tracking import tracking_uri

    MlflowClient(tracking_uri(cfg, root)).set_terminated(run_id, status=status)


def run_pipeline(root: Path) -> dict[str, Any]:
    load_params(root / "params.yaml")  # refuse bad params before anything starts
    if not (root / "dvc.yaml").is_file():
        raise ValueError(f"{root}: no dvc.yaml (run cotflow from the workspace root)")
    return pipeline(str(root))

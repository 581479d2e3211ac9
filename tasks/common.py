"""What every stage shares: config for its iteration, the layout, timing and its stats file.

A stage is a plain function `run(cfg, layout, it) -> (stats, timing)` (the base stages:
`run(cfg, layout)`); `run_stage` is what `python -m cotflow stage NAME [--iteration K]`
(dvc.yaml's cmd) calls. `stats` depend only on inputs and seeds (an output DVC tracks, so
reruns hash the same); `timing` holds what the machine decides (seconds, tokens/s, memory)
and goes to a file DVC does not track.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import resource
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

from cotflow import faults, tracking
from cotflow.config import PipelineConfig, load_params, read_params
from cotflow.layout import (
    BASE_STAGES,
    STAGES,
    IterationLayout,
    Layout,
    checkpoint_dir,
    log_file,
    stats_file,
    timing_file,
)
from cotflow.records import write_json
from cotflow.stage_errors import trace_header

log = logging.getLogger("cotflow")
ALL_STAGES = (*BASE_STAGES, *STAGES)
# Stages that load a model: their torch/transformers import is timed apart from their work,
# since it is a per-process cost of running stages as separate commands.
MODEL_STAGES = frozenset({"warmstart", "baseline", "sample", "train", "evaluate"})
SAMPLING_STAGES = frozenset({"baseline", "allocate", "sample", "critique", "evaluate"})


def normalize_key(iteration: str | int) -> str:
    """'3', 3 and '003' all name iteration '003'."""
    try:
        return f"{int(iteration):03d}"
    except ValueError:
        raise ValueError(f"--iteration {iteration!r}: expected a number like 3 or 003") from None


def iteration_layout(cfg: PipelineConfig, root: Path, key: str) -> IterationLayout:
    return Layout(root).iteration(key, cfg.iterations[key].prev)


def problems_by_id(path: Path) -> dict[str, dict[str, Any]]:
    from cotflow.records import read_table, rows_of

    return {row["id"]: row for row in rows_of(read_table(path, "problems"))}


def iteration_seed(cfg: PipelineConfig, key: str) -> int:
    """The seed of iteration `key`'s sampling and training: differs per iteration."""
    return cfg.seed * 1000 + int(key)


def run_stage(name: str, iteration: str | None, root: Path, params: Path) -> dict[str, Any]:
    """Load params, run one stage, write its stats JSON last, return the stats.

    The stage's log also goes to `<folder>/logs/<stage>.log` (untracked), which the Prefect
    flow forwards to the stage's task run.
    """
    if name not in ALL_STAGES:
        raise ValueError(f"unknown stage {name!r} (have {', '.join(ALL_STAGES)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    base, it_cfg, key = stage_config(name, iteration, params)
    layout = Layout(root)
    it = None if key is None else iteration_layout(base, root, key)
    folder = layout.base if it is None else it.dir
    faults.enter_stage(name if it is None else f"{name}@{it.key}")
    _check_backends(name, it_cfg)
    handler = _log_to_file(log_file(folder, name))
    try:
        faults.point("start")
        return _run_logged(name, base, it_cfg, layout, it, folder)
    except Exception:
        # The trace goes to the stage's log file; the console gets the CLI's one-line error.
        handler.stream.write(f"{trace_header(name)}\n{traceback.format_exc()}")
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def run_base(root: Path, params: Path) -> dict[str, dict[str, Any]]:
    """Run the base stages in order (what `dvc repro baseline` runs after validate), for
    benchmarks and tests that build a warm start without DVC: stage -> its stats."""
    return {name: run_stage(name, None, root, params) for name in BASE_STAGES}


def stage_config(name: str, iteration: str | None, params: Path
                 ) -> tuple[PipelineConfig, PipelineConfig, str | None]:
    """(base config, the config the stage runs with, its iteration key or None for a base
    stage).

    An iteration's stage validates params.yaml once and its own iteration's overrides once;
    other iterations' overrides are their own stages' business.
    """
    if name in BASE_STAGES:
        if iteration is not None:
            raise ValueError(f"{name} takes no --iteration")
        # Every iteration's overrides too in the first (`model`): it starts every pipeline,
        # so a bad override in the last iteration is refused before the warm start rather
        # than hours later. The base stages after it run with params.yaml's own settings.
        cfg = load_params(params) if name == BASE_STAGES[0] else read_params(params)
        return cfg, cfg, None
    if iteration is None:
        raise ValueError(f"stage {name} needs --iteration")
    key = normalize_key(iteration)
    base = read_params(params)
    return base, base.for_iteration(key), key


def _check_backends(name: str, cfg: PipelineConfig) -> None:
    """A backend or extra that is missing fails here, before the stage writes anything."""
    from models.backends import check_backends

    check_backends(cfg, sampling=name in SAMPLING_STAGES, training=name == "train")


def _log_to_file(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _run_logged(name: str, base: PipelineConfig, cfg: PipelineConfig, layout: Layout,
                it: IterationLayout | None, folder: Path) -> dict[str, Any]:
    module = importlib.import_module(f"tasks.{name}")
    t0 = time.perf_counter()
    if name in MODEL_STAGES:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    imports = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats, timing = module.run(cfg, layout) if it is None else module.run(cfg, layout, it)
    timing = {**timing, "seconds": round(time.perf_counter() - t0, 3),
              "import_seconds": round(imports, 3),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    faults.point("done")
    write_json(timing_file(folder, name), timing)
    write_json(stats_file(folder, name), stats)  # last: the stage's "done" mark
    # Only now: a stage killed after saving its output but before its stats file resumes
    # from its last checkpoint instead of starting over. Its own checkpoint only: base's
    # `data` must not drop the checkpoint of a warm start killed before it reran.
    shutil.rmtree(checkpoint_dir(folder) / name, ignore_errors=True)
    with contextlib.suppress(OSError):
        checkpoint_dir(folder).rmdir()  # once empty: nothing hidden is left behind
    if cfg.tracking.enabled and name in tracking.TRACKED_STAGES and not tracking.logged_by_flow():
        # After the stage's own files, so MLflow gets this run's figures, not the last run's.
        t1 = time.perf_counter()
        tracking.log_stage(cfg, layout, None if it is None else it.key, base=base)
        timing["tracking_seconds"] = round(time.perf_counter() - t1, 3)
        write_json(timing_file(folder, name), timing)
    log.info("%s done: %s %s", name, json.dumps(stats, sort_keys=True), json.dumps(timing))
    return {**stats, **timing}

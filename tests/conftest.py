"""Shared test helpers: the micro params and the offline, in-workspace environment."""

from __future__ import annotations

import shutil
import time
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from cotflow.env import apply_defaults
from cotflow.workspace import make_workspace

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "data" / "params.micro.yaml"

apply_defaults(ROOT)

# The files that take minutes, longest first. Under `--dist loadfile` the workers take files
# in collection order, so one of these collected last would run alone after the rest. The
# second is one that does not wait for the first's `finished_micro`.
LONG_FILES = ("test_pipeline_e2e.py", "test_smollm2_e2e.py", "test_methods_e2e.py",
              "test_flow_e2e.py", "test_deploy_e2e.py", "test_bad_input_e2e.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable otherwise


def micro_params(**section_updates: dict) -> dict:
    raw = yaml.safe_load(MICRO.read_text())
    for section, values in section_updates.items():
        raw[section].update(values)
    return raw


@pytest.fixture(scope="session")
def finished_micro(tmp_path_factory, worker_id: str) -> Path:
    """The micro pipeline after one `dvc repro`, made once per test session (pytest-xdist's
    workers share it: the first makes it, the others wait for it). Read it, or copy it
    (copy_workspace) to change a setting and let DVC rerun only what the change touches:
    what a user does, and a fraction of a fresh pipeline's cost per test."""
    from filelock import FileLock

    from tests.test_pipeline_e2e import _dvc, _env

    # Under xdist each worker has its own basetemp; their parent is this session's.
    shared = tmp_path_factory.getbasetemp()
    shared = shared if worker_id == "master" else shared.parent
    ws, done = shared / "finished-micro", shared / "finished-micro.done"
    with FileLock(str(shared / "finished-micro.lock")):
        if not done.exists():
            shutil.rmtree(ws, ignore_errors=True)  # a worker that failed mid-way left it
            ws.mkdir()
            make_workspace(ws, micro_params())
            _dvc(ws, _env(ws), "repro")
            done.touch()
    return ws


def copy_workspace(src: Path, dest: Path, params: dict | None = None) -> Path:
    """A copy of workspace `src` at `dest` (DVC's cache and lock with it), without its MLflow
    store, so that a test sees the runs it made only; `params` replace params.yaml."""
    shutil.copytree(src, dest, symlinks=True,
                    ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", ".prefect"))
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def preset_params_file(path: Path, raw: dict, presets: list[str] | None = None,
                       **overrides: dict) -> Path:
    """`raw` params with per-iteration overrides, written to `path`, then `cotflow preset
    PRESETS` applied to the file."""
    from cotflow.presets import apply_preset

    for key, values in overrides.items():
        raw["iterations"][key]["overrides"] = values
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    if presets:
        apply_preset(path, presets)
    return path


@cache
def _char_tokenizer():
    from models.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


def sample_row(prompt_id: str, sample_idx: int, prompt: str, completion: str, *,
               finished: bool = True) -> dict[str, Any]:
    """A samples.parquet row as the hf backend records it for the tiny model: the character
    tokenizer's ids of the prompt (<bos> first) and of the completion (<eos> iff finished)."""
    tok = _char_tokenizer()
    ids = tok(completion, add_special_tokens=False)["input_ids"]
    ids += [tok.eos_token_id] if finished else []
    return {"prompt_id": prompt_id, "sample_idx": sample_idx, "prompt": prompt,
            "completion": completion, "num_tokens": len(ids), "finished": finished,
            "prompt_ids": tok(prompt)["input_ids"], "completion_ids": ids}


def frozen_pid(marker: Path, within_s: float = 300) -> int:
    """The pid a stage wrote to a fault `marker` once that process is stopped (state T)."""
    deadline = time.time() + within_s
    while time.time() < deadline:
        if marker.is_file() and marker.read_text().strip():
            pid = int(marker.read_text())
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "T":
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no stage froze at {marker.name}")

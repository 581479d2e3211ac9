"""Bad input leaves every artifact as it was (issue 18), under each command a user runs on
a finished pipeline: `dvc repro`, `dvc exp run -S` and `cotflow run`. DVC removes a stage's
outputs before running it, so the validate stage (tasks/validate.py) must refuse first.
What only a stage can find fails in one line naming the cause."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cotflow.workspace import make_workspace
from tests.conftest import copy_workspace, micro_params
from tests.test_pipeline_e2e import _dvc, _env

pytestmark = pytest.mark.slow

# id: (dotted key, bad value, what the error must say). A leading + adds a key (DVC's -S).
BAD = {
    "unknown-key": ("+train.lrr", 0.1, "train.lrr: unknown key"),
    "allocate-n-0": ("allocate.n", 0, "allocate.n: Input should be greater than 0"),
    "pass-k-over-n-samples": ("evaluate.n_samples", 1, "pass_k 2 exceeds n_samples 1"),
    "missing-data-file": ("data.source", "data/my_problems.jsonl",
                          "data.source: data/my_problems.jsonl: file not found"),
    "missing-model-path": ("model.name_or_path", "./no-such-model",
                           "model.name_or_path './no-such-model': no saved checkpoint there"),
    # Refused before the model stage would remove its conversion of the previous source.
    "missing-gguf-file": ("model.name_or_path", "models/no-such.gguf",
                          "model.name_or_path 'models/no-such.gguf': no such GGUF file"),
}
COMMANDS = ("dvc repro", "dvc exp run", "cotflow run")


def _hashes(ws: Path) -> dict[str, str]:
    """Every file under artifacts/, and MLflow's store if any (no run may be left: the
    copy starts without one), by content."""
    files = [*sorted((ws / "artifacts").rglob("*")), ws / "mlflow.db"]
    return {p.relative_to(ws).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files if p.is_file()}


def _with(raw: dict, dotted: str, value: object) -> dict:
    """`raw` (a deep copy) with the dotted key set."""
    out = yaml.safe_load(yaml.safe_dump(raw))
    *parents, last = dotted.lstrip("+").split(".")
    section = out
    for key in parents:
        section = section[key]
    section[last] = value
    return out


@pytest.fixture(scope="module")
def finished(finished_micro, tmp_path_factory) -> tuple[Path, dict[str, str], str]:
    """A copy of the finished micro pipeline: workspace, env, its params.yaml."""
    ws = copy_workspace(finished_micro, tmp_path_factory.mktemp("bad-input") / "ws")
    env = _env(ws)
    env.pop("COTFLOW_DEBUG")  # the one-line errors users see
    return ws, env, (ws / "params.yaml").read_text()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("bad", list(BAD))
def test_bad_input_touches_no_artifact(finished, bad: str, command: str) -> None:
    ws, env, good = finished
    key, value, needle = BAD[bad]
    before = _hashes(ws)
    if command == "dvc exp run":
        args = [sys.executable, "-m", "dvc", "exp", "run", "-S", f"{key}={value}"]
    else:
        (ws / "params.yaml").write_text(yaml.safe_dump(_with(yaml.safe_load(good), key, value),
                                                       sort_keys=False))
        args = ([sys.executable, "-m", "dvc", "repro"] if command == "dvc repro"
                else [sys.executable, "-m", "cotflow", "run"])
    try:
        r = subprocess.run(args, cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    finally:
        (ws / "params.yaml").write_text(good)
    assert r.returncode != 0, r.stdout
    assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
    if command == "cotflow run":
        assert needle in r.stderr.strip().splitlines()[-1]
    assert _hashes(ws) == before


def test_a_stage_failing_midway_says_how_its_outputs_come_back(finished) -> None:
    """What validation cannot foresee: DVC removed the stage's outputs, the message says
    how to get them back, and `dvc repro` does so from its run-cache."""
    ws, env, _ = finished
    before = _hashes(ws)
    r = subprocess.run([sys.executable, "-m", "dvc", "repro", "-f", "--single-item",
                        "train@001"], cwd=ws, env={**env, "COTFLOW_FAULT": "train@001:start:fail"},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert not (ws / "artifacts/iter-001/policy").exists()
    assert "DVC removed the outputs of train@001 before it ran; `dvc repro` brings them back" \
        in r.stderr, r.stderr
    assert "is cached - skipping run" in _dvc(ws, env, "repro").stdout
    assert _hashes(ws) == before
    assert _dvc(ws, env, "status").stdout.strip() == "Data and pipelines are up to date."


def test_a_failing_cotflow_run_ends_in_one_line_naming_the_cause(tmp_path) -> None:
    """A bad row only the data stage can find: the run's last line is its cause, with no
    traceback and no retry (it would fail the same way); the trace is in the stage's log."""
    rows = [{"id": f"g{i}", "question": f"What is {i} plus 1?", "answer": str(i + 1)}
            for i in range(4)] + [{"id": "b", "question": "What is 2 plus 2?"}]
    raw = micro_params(data={"source": "problems.jsonl", "n_train": 3, "n_test": 2,
                             "columns": {"question": "question", "answer": "answer",
                                         "solution": None, "id": "id", "difficulty": None}},
                       allocate={"prompts_per_iteration": 2})
    ws = make_workspace(tmp_path, raw)
    (ws / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**_env(ws), "PYTHONUNBUFFERED": "1"}  # stdout and stderr in order, as on a terminal
    env.pop("COTFLOW_DEBUG")
    r = subprocess.run([sys.executable, "-m", "cotflow", "run"], cwd=ws, env=env, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    assert r.returncode == 2
    assert r.stdout.strip().splitlines()[-1] == (
        "cotflow: error: data failed: problems.jsonl: row 4 (id 'b'), field 'answer': "
        "expected a string, got None"), r.stdout[-3000:]
    assert "Traceback" not in r.stdout and "Retry" not in r.stdout, r.stdout[-3000:]
    assert "Traceback" in (ws / "logs/base/data.log").read_text()

"""The two-iteration micro pipeline end to end through real DVC and MLflow (through Prefect:
tests/test_flow_e2e.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from cotflow.layout import BASE_STAGES
from tests.conftest import copy_workspace, micro_params

pytestmark = pytest.mark.slow
BASE = set(BASE_STAGES)
STAGES = ["validate", *BASE_STAGES] + [
    f"{s}@{k}" for k in ("001", "002")
    for s in ("allocate", "sample", "verify", "critique", "judge", "train", "evaluate")]


def _env(ws: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING_URI", "COTFLOW_"))}
    env.update(PREFECT_HOME=str(ws / ".prefect"), COTFLOW_DEBUG="1", **extra)
    return env


def _run(args: list[str], ws: Path, env: dict[str, str], timeout: int = 900):
    r = subprocess.run(args, cwd=ws, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def _dvc(ws: Path, env: dict[str, str], *args: str):
    return _run([sys.executable, "-m", "dvc", *args], ws, env)


def _lock_outs(ws: Path) -> dict[str, list]:
    """Each stage's outputs and their hashes, as dvc.lock records them."""
    stages = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return {name: sorted((o["path"], o.get("md5")) for o in entry.get("outs", []))
            for name, entry in stages.items()}


@pytest.fixture(scope="module")
def repro_ws(finished_micro, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the finished micro pipeline, for tests that change it."""
    ws = copy_workspace(finished_micro, tmp_path_factory.mktemp("repro") / "ws")
    return ws, _env(ws)


def test_lock_and_status_after_repro(finished_micro):
    ws, env = finished_micro, _env(finished_micro)
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert sorted(lock) == sorted(STAGES)
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}


def test_second_repro_does_nothing(repro_ws):
    ws, env = repro_ws
    before = (ws / "dvc.lock").read_text()
    out = _dvc(ws, env, "repro").stdout
    assert "Running stage" not in out
    assert (ws / "dvc.lock").read_text() == before


def test_train_param_change_reruns_train_and_what_follows_only(repro_ws):
    """A user's variant: `dvc exp run -S train.lr=...` on a committed pipeline reruns train
    and what follows only, and `dvc exp show --only-changed` shows the param and metrics."""
    ws, env = repro_ws
    _git(ws, "add", "-A")  # the finished pipeline: its lock, metrics and figures
    _git(ws, "commit", "-qm", "micro pipeline")
    params = (ws / "params.yaml").read_text()
    raw = yaml.safe_load(params)
    # Large enough that iteration 001's policy answers differently (at lr / 2 the micro
    # pipeline's greedy answers on its 24 problems came out the same, metrics and all).
    lr = raw["train"]["lr"] * 100
    raw["train"]["lr"] = lr
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    stale = json.loads(_dvc(ws, env, "status", "--json").stdout)
    assert sorted(stale) == ["train@001", "train@002", "validate"]  # validate: any param
    (ws / "params.yaml").write_text(params)
    try:
        outs_before = _lock_outs(ws)
        ran = _ran(_dvc(ws, env, "exp", "run", "-S", f"train.lr={lr}").stdout)
        assert ran[0] == "train@001"
        upstream = BASE | {"allocate@001", "sample@001", "verify@001", "critique@001",
                           "judge@001"}
        assert not upstream & set(ran)
        # allocate@002 depends on iter-001's policy (GVM probes it); uniform rewrites the
        # same bytes.
        assert "allocate@002" in ran
        assert _lock_outs(ws)["allocate@002"] == outs_before["allocate@002"]
        assert {"evaluate@001", "sample@002", "train@002", "evaluate@002"} <= set(ran)
        _exp_show_compares(ws, env, lr)
    finally:
        (ws / "params.yaml").write_text(params)
    # Back to the old value: DVC's run-cache restores the old outputs instead of training.
    out = _dvc(ws, env, "repro").stdout
    assert "is cached - skipping run" in out
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}


def _exp_show_compares(ws: Path, env: dict[str, str], lr: float) -> None:
    """The committed run and the experiment side by side: every iteration's metrics read
    (no `!`: they are in both commits), and --only-changed keeps the changed param."""
    every = list(csv.DictReader(io.StringIO(_dvc(ws, env, "exp", "show", "--csv").stdout)))
    head = next(r for r in every if r["typ"] == "baseline" and r["rev"] != "workspace")
    exp = next(r for r in every if r["typ"].startswith("branch"))
    accuracy = [c for c in every[0] if c.endswith("metrics.json:accuracy")]
    assert len(accuracy) == 3, list(every[0])  # base, iter-001, iter-002
    assert all(head[c] not in ("", "!") and exp[c] not in ("", "!") for c in accuracy)
    changed = list(csv.DictReader(io.StringIO(
        _dvc(ws, env, "exp", "show", "--only-changed", "--csv").stdout)))
    assert float(changed[-1]["train.lr"]) == lr
    # The new lr changes what the iterations' policies write; the warm start's are the same.
    assert any(c.startswith("artifacts/iter-002/metrics.json:") for c in changed[0])
    assert not any(c.startswith("artifacts/base/") for c in changed[0])
    assert not any("/stats/" in c for c in every[0])  # the stages' stats are not metrics


def _git(ws: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=cotflow", "-c", "user.email=cotflow@localhost",
                    *args], cwd=ws, check=True, capture_output=True)


def test_evaluation_setting_reruns_the_evaluations_only(repro_ws):
    """evaluate.n_samples is read by the warm start's evaluation and each iteration's, not by
    the splits or the warm start: those stay up to date (issue 18)."""
    ws, env = repro_ws
    params = (ws / "params.yaml").read_text()
    raw = yaml.safe_load(params)
    raw["evaluate"]["n_samples"] += 1
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        stale = json.loads(_dvc(ws, env, "status", "--json").stdout)
        assert sorted(stale) == ["baseline", "evaluate@001", "evaluate@002", "validate"]
    finally:
        (ws / "params.yaml").write_text(params)
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}


def _ran(stdout: str) -> list[str]:
    """The stages DVC ran, less `validate`: it reruns on any change of params and costs
    nothing, so the question is always which of the others reran."""
    ran = [line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")]
    return [stage for stage in ran if stage != "validate"]


def _changed_repro(finished: Path, tmp_path_factory, name: str,
                   raw: dict) -> tuple[Path, dict[str, str]]:
    """A copy of the finished micro pipeline with `raw` params after one `dvc repro`, which
    reruns what the change touches and leaves nothing stale."""
    ws = copy_workspace(finished, tmp_path_factory.mktemp(name) / "ws", raw)
    env = _env(ws)
    _dvc(ws, env, "repro")
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}
    return ws, env


def test_gvm_iteration_through_dvc_and_mlflow(finished_micro, tmp_path_factory):
    """Iteration 002 allocates by GVM: its budget is an output, its histograms reach MLflow,
    and a GVM knob leaves iteration 001's (uniform) samples alone."""
    from mlflow.tracking import MlflowClient

    from cotflow.records import read_table

    raw = micro_params()
    raw["iterations"]["002"]["overrides"] = {"allocate": {"method": "gvm"}}
    ws, env = _changed_repro(finished_micro, tmp_path_factory, "gvm", raw)
    assert ("artifacts/iter-002/budget.parquet" in
            [p for p, _ in _lock_outs(ws)["allocate@002"]])
    budget = read_table(ws / "artifacts/iter-002/budget.parquet", "budget")
    assert sum(budget["n"]) == 64 and set(budget["probe_samples"]) == {4}
    samples = read_table(ws / "artifacts/iter-002/samples.parquet", "samples")
    assert [samples["prompt_id"].count(p) for p in budget["prompt_id"]] == budget["n"]
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cotflow")
    child = next(r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("cotflow.iteration") == "002")
    assert {a.path for a in client.list_artifacts(child.info.run_id, "allocation")} == {
        "allocation/budget_histograms.png", "allocation/budget.parquet"}
    assert child.data.metrics["stats/allocate/probe_samples"] == 64

    raw["allocate"]["gvm"]["alpha"] = 0.5
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    before = _lock_outs(ws)
    ran = _ran(_dvc(ws, env, "repro").stdout)
    assert {"allocate@001", "allocate@002"} <= set(ran)
    assert not (BASE | {"sample@001", "train@001"}) & set(ran)
    assert _lock_outs(ws)["allocate@001"] == before["allocate@001"]


def test_every_trained_parameter_changed(finished_micro):
    ws = finished_micro
    base = load_file(ws / "artifacts/base/policy/model.safetensors")
    final = load_file(ws / "artifacts/iter-002/policy/model.safetensors")
    assert base.keys() == final.keys()
    unchanged = [k for k in base if bool((base[k] == final[k]).all())]
    assert not unchanged
    train = [json.loads((ws / f"artifacts/iter-{k}/stats/train.json").read_text())
             for k in ("001", "002")]
    assert all(t["examples"] > 0 for t in train), train


def test_metrics_and_plots(finished_micro, tmp_path):
    ws, env = finished_micro, _env(finished_micro)
    shown = json.loads(_dvc(ws, env, "metrics", "show", "--json").stdout)
    data = next(iter(shown.values()))["data"]
    assert "accuracy" in data["artifacts/iter-002/metrics.json"]["data"]
    assert set(data) == {f"artifacts/{f}/metrics.json" for f in ("base", "iter-001", "iter-002")}
    # Images only: the page DVC writes needs no network (data plots load vega from a CDN).
    _dvc(ws, env, "plots", "show", "-o", str(tmp_path / "page"))
    page = (tmp_path / "page/index.html").read_text()
    assert "iter-002_accuracy.png" in page and "<script src=" not in page
    assert (ws / "artifacts/iter-002/accuracy.png").read_bytes().startswith(b"\x89PNG")


def test_mlflow_parent_and_child_runs(finished_micro):
    from mlflow.tracking import MlflowClient

    from cotflow.tracking import pipeline_key

    ws = finished_micro
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cotflow")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("cotflow.kind") == "pipeline"
               and r.data.tags["cotflow.pipeline_key"] == pipeline_key(ws)]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == f"{ws.name}: raft, raft++"
    assert parent.data.params["train.lr"] == str(micro_params()["train"]["lr"])
    assert parent.data.tags["mlflow.source.git.commit"] not in ("", "unknown")
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId")
                       == parent.info.run_id), key=lambda r: r.data.tags["cotflow.iteration"])
    assert [c.data.tags["cotflow.iteration"] for c in children] == ["001", "002"]
    algorithms = [micro_params()["iterations"][k]["algorithm"] for k in ("001", "002")]
    assert [(c.data.params["algorithm"], c.data.params["kind"]) for c in children] == [
        (a, a) for a in algorithms]  # raft, raft++: entries named as their kind
    for child in children:
        assert child.data.params["train.lr"] == str(micro_params()["train"]["lr"])
        assert "eval/accuracy" in child.data.metrics
        assert "stats/train/loss" in child.data.metrics
        assert "timing/sample/tokens_per_s" in child.data.metrics
        assert f"dvc/train/{child.data.tags['cotflow.iteration']}" in child.data.tags
        assert "dvc/warmstart" in child.data.tags
        # The held-out headline first, as MLflow's compare view orders (and opens on) them.
        assert sorted(child.data.metrics)[:3] == [
            "eval/accuracy", "eval/mean_completion_tokens", "eval/pass_at_1"]
    history = client.get_metric_history(parent.info.run_id, "eval/accuracy")
    assert sorted({m.step for m in history}) == [0, 1, 2]
    # The warm start has no child: its stages' figures are the parent's, at step 0.
    for name in ("stats/data/train_problems", "stats/warmstart/final_loss",
                 "timing/warmstart/tokens_per_s", "timing/baseline/seconds"):
        assert [m.step for m in client.get_metric_history(parent.info.run_id, name)] == [0]

"""Each iteration's MLflow child run logs the settings it ran with; the parent keeps
params.yaml's and is named after the workspace and its algorithms; the held-out headline
sorts first. Through the real MLflow client on a sqlite store."""

from __future__ import annotations

from pathlib import Path

import yaml

from cotflow.config import PipelineConfig, flatten, read_params
from cotflow.layout import Layout, stats_file, timing_file
from cotflow.presets import LR
from cotflow.records import write_json
from cotflow.tracking import (
    PARENT_ENV,
    SUPERSEDED,
    log_iteration,
    log_stage,
    mlflow_key,
    parent_name,
    start_parent,
)
from tasks.common import iteration_layout, stage_config
from tests.conftest import micro_params, preset_params_file


def _params(tmp_path: Path, presets: list[str] | None = None, **overrides: dict) -> Path:
    """Micro params with MLflow in `tmp_path`, then `cotflow preset PRESETS` applied."""
    raw = micro_params()
    raw["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return preset_params_file(tmp_path / "params.yaml", raw, presets, **overrides)


def _iteration_files(root: Path, base: PipelineConfig, key: str) -> None:
    """What an iteration's stages leave for tracking: stats, metrics and the plot."""
    it = iteration_layout(base, root, key)
    write_json(stats_file(it.dir, "train"), {"loss": 0.5, "examples": 64})
    write_json(stats_file(it.dir, "allocate"), {"probe_samples": 0})
    write_json(timing_file(it.dir, "allocate"), {"seconds": 0.5, "import_seconds": 1.5})
    write_json(timing_file(it.dir, "sample"), {"sample/tokens_per_s": 900.0, "peak_rss_mb": 1.0})
    write_json(stats_file(it.dir, "evaluate"), {"accuracy": 0.25})
    write_json(it.metrics, {"iteration": int(key), "accuracy": 0.25, "pass@1": 0.25,
                            "mean_completion_tokens": 12.0, "finished_fraction": 1.0})
    it.plot.write_bytes(b"\x89PNG\r\n\x1a\n")


def _log(root: Path, params: Path, key: str) -> str:
    """What tasks/common.py does after an iteration's evaluate stage."""
    base, cfg, key = stage_config("evaluate", key, params)
    _iteration_files(root, base, key)
    return log_iteration(cfg, Layout(root), iteration_layout(base, root, key), base=base)


def _client(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return client, client.get_experiment_by_name("cotflow").experiment_id


def test_child_runs_log_their_iterations_settings(tmp_path, monkeypatch):
    monkeypatch.delenv(PARENT_ENV, raising=False)
    params = _params(tmp_path, ["grpo", "grpo"])  # what `cotflow preset grpo -n 2` writes
    children = [_log(tmp_path, params, key) for key in ("001", "002")]
    client, exp_id = _client(tmp_path)
    runs = {r.info.run_id: r for r in client.search_runs([exp_id])}
    base = read_params(params)

    parent_id = runs[children[0]].data.tags["mlflow.parentRunId"]
    assert runs[children[1]].data.tags["mlflow.parentRunId"] == parent_id
    parent = runs[parent_id].data.params
    # The parent (made by the first child here) keeps params.yaml as written, all of it:
    # more than log_batch's 100 params per call.
    assert len(parent) == len(flatten(base)) > 100
    assert parent["train.lr"] == str(micro_params()["train"]["lr"])
    assert parent["allocate.n"] == "4"

    for run_id in children:
        child = runs[run_id].data.params
        assert child["train.lr"] == str(LR["grpo"]) and child["allocate.n"] == "8"
        assert child["allocate.prompts_per_iteration"] == "8"
        assert child["algorithm"] == "grpo" and child["kind"] == "grpo"
        assert child["algorithms.grpo.kl_coef"] == str(base.algorithms["grpo"].kl_coef)
        assert child["sample.temperature"] == str(base.sample.temperature)
        assert not [k for k in child if k.startswith(
            ("iterations.", "serving.", "store.", "tracking.", "algorithms.raft"))]
        assert runs[run_id].data.metrics["stats/train/loss"] == 0.5
    assert len(runs) == 3
    assert runs[parent_id].info.run_name == f"{tmp_path.name}: grpo x2"


def test_the_warm_start_is_logged_on_the_parent_at_step_0(tmp_path, monkeypatch):
    """After the baseline stage: the base stages' stats and timing (the warm start has no
    child run) and its held-out metrics, baseline's stats aside (its accuracy only)."""
    monkeypatch.delenv(PARENT_ENV, raising=False)
    params = _params(tmp_path)
    lay = Layout(tmp_path)
    write_json(stats_file(lay.base, "data"), {"train_problems": 600, "test_problems": 24})
    write_json(stats_file(lay.base, "warmstart"), {"steps": 200, "final_loss": 0.4})
    write_json(timing_file(lay.base, "warmstart"), {"warmstart/tokens_per_s": 500.0,
                                                    "seconds": 9.0})
    write_json(stats_file(lay.base, "baseline"), {"accuracy": 0.25})
    write_json(lay.base_metrics, {"iteration": 0, "accuracy": 0.25, "pass@1": 0.5,
                                  "finished_fraction": 1.0})
    base, cfg, key = stage_config("baseline", None, params)
    log_stage(cfg, lay, key, base=base)
    client, exp_id = _client(tmp_path)
    (parent,) = client.search_runs([exp_id])
    assert parent.data.tags["cotflow.kind"] == "pipeline"
    assert parent.data.metrics == {
        "eval/accuracy": 0.25, "eval/pass_at_1": 0.5, "evaluate/finished_fraction": 1.0,
        "stats/data/train_problems": 600, "stats/data/test_problems": 24,
        "stats/warmstart/steps": 200, "stats/warmstart/final_loss": 0.4,
        "timing/warmstart/tokens_per_s": 500.0, "timing/warmstart/seconds": 9.0}
    history = client.get_metric_history(parent.info.run_id, "stats/warmstart/steps")
    assert [m.step for m in history] == [0]


def test_raft_plus_plus_names_and_a_changed_setting_gets_a_new_child(tmp_path, monkeypatch):
    params = _params(tmp_path, ["raft++"])
    base = read_params(params)
    monkeypatch.setenv(PARENT_ENV, start_parent(base, tmp_path))  # as `cotflow run` does
    first = _log(tmp_path, params, "001")
    assert _log(tmp_path, params, "001") == first  # a plain rerun updates its child
    client, exp_id = _client(tmp_path)
    logged = client.get_run(first).data.params
    assert logged["algorithm"] == "raft++" and logged["kind"] == "raft++"
    assert logged[mlflow_key("algorithms.raft++.clip_eps")] == "0.2"
    assert "algorithms.raft_plus_plus.clip_eps" in logged

    # The same iteration under the same parent with a changed setting: MLflow params are
    # immutable, so a new child holds it and the old one says it was superseded.
    raw = yaml.safe_load(params.read_text())
    raw["iterations"]["001"]["overrides"]["train"]["lr"] = LR["raft++"] * 2
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    second = _log(tmp_path, params, "001")
    assert second != first
    assert client.get_run(first).data.tags[SUPERSEDED] == second
    assert client.get_run(first).data.params["train.lr"] == str(LR["raft++"])
    new = client.get_run(second)
    assert new.data.params["train.lr"] == str(LR["raft++"] * 2)
    assert new.data.tags["cotflow.supersedes"] == first
    assert new.data.metrics["eval/accuracy"] == 0.25
    assert _log(tmp_path, params, "001") == second  # the new child is the current one
    children = client.search_runs([exp_id], "tags.`cotflow.iteration` = '001'")
    assert len(children) == 2


def test_headline_metrics_sort_first_and_timings_apart(tmp_path, monkeypatch):
    """MLflow's compare view plots the first metric by code point; its charts group by the
    prefix before "/"."""
    params = _params(tmp_path, ["raft", "grpo"])
    base = read_params(params)
    parent = start_parent(base, tmp_path)
    monkeypatch.setenv(PARENT_ENV, parent)
    child = _log(tmp_path, params, "001")
    client, _ = _client(tmp_path)
    names = sorted(client.get_run(child).data.metrics)  # as the compare view orders them
    assert names == [
        "eval/accuracy", "eval/mean_completion_tokens", "eval/pass_at_1",
        "evaluate/finished_fraction",
        "stats/allocate/probe_samples", "stats/train/examples", "stats/train/loss",
        "timing/allocate/import_seconds", "timing/allocate/seconds",
        "timing/sample/peak_rss_mb", "timing/sample/tokens_per_s"]
    # The parent charts the held-out evaluation across iterations (step = iteration).
    assert sorted(client.get_run(parent).data.metrics) == names[:4]
    assert [m.step for m in client.get_metric_history(parent, "eval/accuracy")] == [1]


def test_parent_names_say_who_runs_what(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    base = read_params(_params(tmp_path, ["raft", "raft++", "grpo", "grpo", "grpo", "raft"]))
    assert parent_name(base, tmp_path) == f"{tmp_path.name}: raft, raft++, grpo x3, raft"
    run_id = start_parent(base, tmp_path, label="nightly")  # a deployment's name
    client, _ = _client(tmp_path)
    run = client.get_run(run_id)
    assert run.info.run_name == "nightly: raft, raft++, grpo x3, raft"
    assert run.data.tags["cotflow.kind"] == "pipeline"
    # MLflow's UI opens the experiment on its runs (not on the GenAI traces overview).
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    many = read_params(_params(tmp_path, ["raft", "grpo"] * 60))
    assert len(parent_name(many, tmp_path)) == 250  # MLflow's limit on a run name
    monkeypatch.setenv("DVC_EXP_NAME", "flaky-agma")  # under `dvc exp run`
    named = parent_name(base, tmp_path)
    assert named == f"{tmp_path.name} [flaky-agma]: raft, raft++, grpo x3, raft"
    run = client.get_run(start_parent(base, tmp_path))
    assert run.data.tags["cotflow.dvc_experiment"] == "flaky-agma"

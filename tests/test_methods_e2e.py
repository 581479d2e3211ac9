"""Each method's iteration through real DVC (`dvc repro`) and MLflow, on the
micro pipeline: its stage outputs are DVC outputs, its figures reach MLflow, and a change to
its settings reruns what it should."""

from __future__ import annotations

import json

import pytest
import yaml

from cotflow.workspace import make_workspace
from tests.conftest import micro_params
from tests.test_pipeline_e2e import _changed_repro, _dvc, _env, _lock_outs, _ran

pytestmark = pytest.mark.slow


def test_critique_grpo_iteration_through_dvc_and_mlflow(finished_micro, tmp_path_factory):
    """Iteration 002 becomes Critique-GRPO with the built-in task's step critic: its
    critiques and refinements are a DVC output of the critique stage, its groups train with
    a refinement each, and MLflow gets its rates, critique type and table."""
    from mlflow.tracking import MlflowClient

    from cotflow.records import read_table

    raw = micro_params()
    raw["iterations"]["002"] = {"algorithm": "critique-grpo", "prev": "iter-001", "overrides": {
        "algorithms": {"critique-grpo": {"critique": "cot"}}}}
    ws, env = _changed_repro(finished_micro, tmp_path_factory, "critique", raw)
    assert ("artifacts/iter-002/critiques.parquet" in
            [p for p, _ in _lock_outs(ws)["critique@002"]])
    critiques = read_table(ws / "artifacts/iter-002/critiques.parquet", "critiques")
    samples = read_table(ws / "artifacts/iter-002/samples.parquet", "samples")
    assert len(critiques["prompt_id"]) == len(samples["prompt_id"]) == 64
    assert sum(critiques["selected"]) == 16 and set(critiques["critique_type"]) == {"cot"}
    assert read_table(ws / "artifacts/iter-001/critiques.parquet", "critiques")["prompt_id"] == []
    train = json.loads((ws / "artifacts/iter-002/stats/train.json").read_text())
    assert train["refinements_trained"] == 16 and train["examples"] == 64
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cotflow")
    child = next(r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("cotflow.iteration") == "002")
    assert child.data.tags["cotflow.critique_type"] == "cot"
    assert child.data.params["algorithms.critique-grpo.critique"] == "cot"
    for name in ("refinement_success_rate", "fresh_pass_rate_on_failed", "rescued_share",
                 "mean_critique_chars"):
        assert 0 <= child.data.metrics[f"stats/critique/{name}"] < 100, name
    assert {a.path for a in client.list_artifacts(child.info.run_id, "critique")} == {
        "critique/critiques.parquet"}

    # A critic setting reruns the critique stages only; the step critic does not read it,
    # so their outputs, and all that follows, stay as they were.
    raw["critique"]["critic"]["retries"] = 1
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    before = _lock_outs(ws)
    assert sorted(_ran(_dvc(ws, env, "repro").stdout)) == ["critique@001", "critique@002"]
    assert _lock_outs(ws) == before


def test_veripo_loop_through_dvc_and_mlflow(tmp_path_factory):
    """Preset `veripo`'s first loop (grpo, then DPO on the GRPO rollouts): the DPO
    iteration samples nothing, its judge depends on iteration 001's samples and verdicts in
    dvc.lock, its flags are an output, and the verifier's rates reach MLflow."""
    from mlflow.tracking import MlflowClient

    from cotflow.presets import apply_preset
    from cotflow.records import read_table

    # A longer warm start than the micro one's, so that some GRPO rollouts are good ones
    # and the DPO iteration has pairs to train (10 here). From the micro pipeline's
    # iteration 002 instead, 4 of 256 GRPO rollouts were rewarded and none consistent.
    ws = make_workspace(tmp_path_factory.mktemp("veripo"),
                        micro_params(warmstart={"steps": 400}))
    apply_preset(ws / "params.yaml", ["grpo", "veripo-dpo"])
    env = _env(ws)
    _dvc(ws, env, "repro")
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    judge_deps = {d["path"] for d in lock["judge@002"]["deps"]}
    assert {"artifacts/iter-001/samples.parquet", "artifacts/iter-001/verdicts.parquet"
            } <= judge_deps
    assert "artifacts/iter-002/flags.parquet" in [p for p, _ in _lock_outs(ws)["judge@002"]]
    assert read_table(ws / "artifacts/iter-002/samples.parquet", "samples")["prompt_id"] == []
    flags = read_table(ws / "artifacts/iter-002/flags.parquet", "flags")
    assert len(flags["prompt_id"]) == 64  # iteration 001's 8 prompts × 8 rollouts
    judge = json.loads((ws / "artifacts/iter-002/stats/judge.json").read_text())
    train = json.loads((ws / "artifacts/iter-002/stats/train.json").read_text())
    assert judge["rollouts_from"] == "prev" and train["pairs"] == judge["pairs"] > 0
    assert judge["pairs_reflection"] > 0 and train["optimizer_steps"] >= 1
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cotflow")
    child = next(r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("cotflow.iteration") == "002")
    for name in ("inconsistency_rate", "repetition_rate", "mean_length", "accuracy",
                 "pairs_reflection", "pairs_consistency"):
        assert f"stats/judge/{name}" in child.data.metrics, name
    assert "evaluate/inconsistency_rate" in child.data.metrics
    assert "stats/train/chosen_logratio" in child.data.metrics
    steps = client.get_metric_history(child.info.run_id, "train_step/margin")
    assert [m.step for m in steps] == list(range(1, train["optimizer_steps"] + 1))
    # A change to the DPO step's settings reruns the DPO iteration only.
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["algorithms"]["veripo"]["beta"] = 0.2
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    ran = _ran(_dvc(ws, env, "repro").stdout)
    assert {"judge@002", "train@002"} <= set(ran)
    assert not {"data", "warmstart", "baseline", "sample@001", "train@001", "judge@001"
                } & set(ran)


def test_spo_iteration_through_dvc_and_mlflow(finished_micro, tmp_path_factory):
    """Iteration 002 becomes spo-chain: the sample stage's MC values are DVC outputs that
    train reads, their figures reach MLflow, and only SPO's sampling knobs resample."""
    from mlflow.tracking import MlflowClient

    raw = micro_params()
    raw["iterations"]["002"] = {"algorithm": "spo", "prev": "iter-001"}
    ws, env = _changed_repro(finished_micro, tmp_path_factory, "spo", raw)
    outs = [p for p, _ in _lock_outs(ws)["sample@002"]]
    assert {"artifacts/iter-002/values.parquet", "artifacts/iter-002/continuations.parquet"
            } <= set(outs)
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert "artifacts/iter-002/values.parquet" in [d["path"] for d in lock["train@002"]["deps"]]
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cotflow")
    child = next(r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("cotflow.iteration") == "002")
    assert child.data.metrics["stats/sample/mc_samples"] > 0
    assert 0 < child.data.metrics["stats/train/masked_token_share"] < 1

    raw["algorithms"]["grpo"]["kl_coef"] = 0.5  # another entry: nothing reruns
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert _ran(_dvc(ws, env, "repro").stdout) == []
    raw["sample"]["segments"]["rollouts"] = 2
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    before = _lock_outs(ws)
    ran = _ran(_dvc(ws, env, "repro").stdout)
    assert {"sample@002", "train@002"} <= set(ran)
    assert not {"data", "warmstart", "baseline"} & set(ran)
    # The sampling settings are one section that every sample stage reads, so RAFT's
    # sample@001 reran too; it drew the same samples, and its iteration stayed as it was.
    assert _lock_outs(ws)["sample@001"] == before["sample@001"]
    assert _lock_outs(ws)["train@001"] == before["train@001"]


def test_ton_iteration_through_dvc_and_mlflow(tmp_path_factory):
    """A thought-dropout warm start and a ton iteration on two levels: the skip ratio,
    length and accuracy per level reach `dvc metrics` and MLflow, and the dropout is a
    setting of the warm start's."""
    from mlflow.tracking import MlflowClient

    raw = micro_params()
    raw["data"]["difficulties"] = [1, 2]
    raw["warmstart"]["thought_dropout"] = 0.5
    raw["verify"]["format"] = "think"
    # Level 2's longest target in TON's format is 53 characters, then <eos>.
    raw["sample"]["max_new_tokens"] = raw["evaluate"]["max_new_tokens"] = 56
    raw["iterations"] = {"001": {"algorithm": "ton", "prev": "base"}}
    ws = make_workspace(tmp_path_factory.mktemp("ton"), raw)
    env = _env(ws)
    _dvc(ws, env, "repro")
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}
    warm = json.loads((ws / "artifacts/base/stats/warmstart.json").read_text())
    assert 0.4 < warm["thought_dropped_fraction"] < 0.6
    shown = json.loads(_dvc(ws, env, "metrics", "show", "--json").stdout)
    data = next(iter(shown.values()))["data"]
    per_level = [f"{m}_difficulty_{d}" for m in ("skip_ratio", "mean_completion_tokens",
                                                  "accuracy") for d in (1, 2)]
    for folder in ("base", "iter-001"):
        metrics = data[f"artifacts/{folder}/metrics.json"]["data"]
        assert all(0 <= metrics[k] <= 56 for k in ["skip_ratio", *per_level]), metrics
    # The stages' stats are outputs, not DVC metrics (out of `dvc exp show`'s columns).
    assert not any("/stats/" in name for name in data)
    stats = ws / "artifacts/iter-001/stats"
    verified = json.loads((stats / "verify.json").read_text())
    assert {"skip_ratio", "format_fraction", "skip_ratio_difficulty_2"} <= set(verified)
    trained = json.loads((stats / "train.json").read_text())
    assert trained["kind"] == "ton" and trained["examples"] == 64
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cotflow")
    child = next(r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("cotflow.iteration") == "001")
    assert child.data.params["kind"] == "ton" and child.data.params["verify.format"] == "think"
    assert child.data.params["algorithms.ton.format_weight"] == "1.0"
    for name in ("evaluate/skip_ratio_difficulty_1", "stats/verify/skip_ratio",
                 "stats/train/skip_ratio", "evaluate/mean_completion_tokens_difficulty_2"):
        assert name in child.data.metrics, name
    parent = client.get_run(child.data.tags["mlflow.parentRunId"])
    history = client.get_metric_history(parent.info.run_id, "evaluate/skip_ratio")
    assert sorted(m.step for m in history) == [0, 1]  # the warm start's and iteration 1's
    for run_id in (child.info.run_id, parent.info.run_id):
        assert "skip_ratio.png" in {a.path for a in client.list_artifacts(run_id)}

    # The dropout is the warm start's: changing it makes warmstart, and all after it, stale,
    # and leaves the splits be.
    raw["warmstart"]["thought_dropout"] = 0.0
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    stale = json.loads(_dvc(ws, env, "status", "--json").stdout)
    assert "warmstart" in stale and "data" not in stale

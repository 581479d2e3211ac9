"""Each stage on a temporary workspace with the micro params and the tiny model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cotflow.config import load_params
from cotflow.layout import Layout
from cotflow.records import read_json, read_table, rows_of, write_table
from cotflow.workspace import make_workspace
from tasks.common import iteration_layout, run_stage
from tests.conftest import micro_params


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("ws"),
                          micro_params(tracking={"enabled": False}))
    run_stage("prepare", None, root, root / "params.yaml")
    return root


def _it(root: Path, key: str = "001"):
    return iteration_layout(load_params(root / "params.yaml"), root, key)


def test_prepare_writes_splits_policy_and_metrics(ws):
    lay = Layout(ws)
    train = read_table(lay.train_set, "problems")
    test = read_table(lay.test_set, "problems")
    assert len(train["id"]) == 600 and len(test["id"]) == 24
    assert not set(train["question"]) & set(test["question"])
    assert (lay.base_policy / "config.json").is_file()
    metrics = read_json(lay.base_metrics)
    assert {"accuracy", "pass@1", "pass@2", "mean_completion_tokens",
            "accuracy_difficulty_1"} <= set(metrics)
    assert read_json(lay.base / "stats" / "prepare.json")["warmstart/steps"] == 200


def test_allocate_is_seeded_and_uniform(ws):
    run_stage("allocate", "1", ws, ws / "params.yaml")
    first = read_table(_it(ws).allocation, "allocation")
    run_stage("allocate", "001", ws, ws / "params.yaml")
    assert read_table(_it(ws).allocation, "allocation") == first
    assert len(first["prompt_id"]) == 16 and set(first["n"]) == {4}
    run_stage("allocate", "2", ws, ws / "params.yaml")
    assert read_table(_it(ws, "002").allocation, "allocation")["prompt_id"] != first["prompt_id"]


def test_sample_then_verify(ws):
    run_stage("allocate", "1", ws, ws / "params.yaml")
    stats = run_stage("sample", "1", ws, ws / "params.yaml")
    samples = read_table(_it(ws).samples, "samples")
    assert len(samples["completion"]) == 64 == stats["completions"]
    assert all(0 < n <= 32 for n in samples["num_tokens"])
    assert stats["sample/tokens_per_s"] > 0
    run_stage("verify", "1", ws, ws / "params.yaml")
    verdicts = read_table(_it(ws).verdicts, "verdicts")
    assert verdicts["prompt_id"] == samples["prompt_id"]
    assert set(verdicts["verdict"]) <= {"correct", "incorrect", "unparseable", "timeout"}
    from cotflow.data.arithmetic import steps_consistent

    # check_steps is on in the micro params: a right answer needs right steps for reward 1.
    assert verdicts["reward"] == [
        1.0 if v == "correct" and steps_consistent(c) else 0.0
        for v, c in zip(verdicts["verdict"], samples["completion"], strict=True)]


@pytest.mark.parametrize(("stage", "kind"), [("critique", "critiques"), ("judge", "judgements")])
def test_unused_stages_write_empty_valid_artifacts_fast(ws, stage, kind):
    it = _it(ws)
    t0 = time.perf_counter()
    run_stage(stage, "1", ws, ws / "params.yaml")
    assert time.perf_counter() - t0 < 1.0
    assert all(col == [] for col in read_table(it.dir / f"{kind}.parquet", kind).values())


def _train_on_gold(ws: Path, algorithm_key: str) -> tuple[dict, dict]:
    """Samples = the gold solutions (all correct), so every trained parameter must move."""
    lay = Layout(ws)
    it = _it(ws, algorithm_key)
    problems = rows_of(read_table(lay.train_set, "problems"))[:24]
    samples = [{"prompt_id": p["id"], "sample_idx": 0, "prompt": p["question"] + "\n",
                "completion": p["solution"], "num_tokens": len(p["solution"]) + 1,
                "finished": True} for p in problems]
    write_table(it.samples, "samples", samples)
    write_table(it.verdicts, "verdicts", [
        {"prompt_id": s["prompt_id"], "sample_idx": 0, "verdict": "correct", "reward": 1.0,
         "extracted": None} for s in samples])
    for stage in ("critique", "judge", "train"):
        stats = run_stage(stage, algorithm_key, ws, ws / "params.yaml")
    before = load_file(it.prev_policy / "model.safetensors")
    after = load_file(it.policy / "model.safetensors")
    return stats, {k: bool((before[k] != after[k]).any()) for k in before}


@pytest.mark.parametrize("key", ["001", "002"])  # 001 is raft, 002 raft++ in the micro params
def test_train_changes_every_parameter(ws, key):
    if key == "002":
        run_stage("critique", "1", ws, ws / "params.yaml")
        run_stage("judge", "1", ws, ws / "params.yaml")
        _train_on_gold(ws, "001")
    stats, changed = _train_on_gold(ws, key)
    assert stats["examples"] == 24
    assert stats["loss"] == stats["loss"] and abs(stats["loss"]) < 100  # finite
    assert all(changed.values()), [k for k, v in changed.items() if not v]
    if key == "002":
        assert stats["algorithm"] == "raft++" and "clip_fraction" in stats


def test_evaluate_writes_metrics_curve_and_png(ws):
    _train_on_gold(ws, "001")
    run_stage("evaluate", "1", ws, ws / "params.yaml")
    it = _it(ws)
    metrics = read_json(it.metrics)
    assert metrics["iteration"] == 1 and 0 <= metrics["accuracy"] <= 1
    assert [p["iteration"] for p in read_json(it.curve)] == [0, 1]
    assert it.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stage_errors_are_named(ws):
    with pytest.raises(ValueError, match="unknown stage"):
        run_stage("explode", "1", ws, ws / "params.yaml")
    with pytest.raises(ValueError, match="needs --iteration"):
        run_stage("sample", None, ws, ws / "params.yaml")
    with pytest.raises(ValueError, match="not in params.yaml"):
        run_stage("sample", "9", ws, ws / "params.yaml")

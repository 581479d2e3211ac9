"""Each stage on a temporary workspace with the micro params and the tiny model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cotflow.config import load_params
from cotflow.layout import BASE_STAGES, Layout
from cotflow.records import read_json, read_table, rows_of, write_table
from cotflow.workspace import make_workspace
from tasks.common import iteration_layout, run_base, run_stage
from tests.conftest import micro_params, sample_row


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("ws"),
                          micro_params(tracking={"enabled": False}))
    run_base(root, root / "params.yaml")
    return root


def _it(root: Path, key: str = "001"):
    return iteration_layout(load_params(root / "params.yaml"), root, key)


def test_base_stages_write_splits_policy_and_metrics(ws):
    lay = Layout(ws)
    train = read_table(lay.train_set, "problems")
    test = read_table(lay.test_set, "problems")
    assert len(train["id"]) == 600 and len(test["id"]) == 24
    assert not set(train["question"]) & set(test["question"])
    assert all(not any(read_table(path, kind).values())
               for kind, path in lay.base_rollout_files.items())
    assert read_json(lay.base / "stats" / "data.json") == {"train_problems": 600,
                                                           "test_problems": 24}
    assert (lay.base_policy / "config.json").is_file()
    assert read_json(lay.base / "stats" / "warmstart.json")["steps"] == 200
    assert not (lay.base / ".ckpt").exists()  # the warm start's checkpoint, once it is saved
    metrics = read_json(lay.base_metrics)
    assert {"accuracy", "pass@1", "pass@2", "mean_completion_tokens",
            "accuracy_difficulty_1"} <= set(metrics)
    assert read_json(lay.base_curve) == [{"iteration": 0, "accuracy": metrics["accuracy"]}]
    assert read_json(lay.base / "stats" / "baseline.json") == {"accuracy": metrics["accuracy"]}
    assert read_json(lay.base_model_source) == {"name_or_path": "tiny"}  # the model stage's
    for stage in BASE_STAGES:
        assert (ws / "logs" / "base" / f"{stage}.log").is_file()
        assert "seconds" in read_json(lay.base / "timing" / f"{stage}.json")


def test_allocate_is_seeded_and_uniform(ws):
    stats = run_stage("allocate", "1", ws, ws / "params.yaml")
    first = read_table(_it(ws).allocation, "allocation")
    raw = _it(ws).allocation.read_bytes(), _it(ws).budget.read_bytes()
    run_stage("allocate", "001", ws, ws / "params.yaml")
    assert read_table(_it(ws).allocation, "allocation") == first
    # byte-identical: a rerun forced by a new previous policy leaves `sample` up to date
    assert (_it(ws).allocation.read_bytes(), _it(ws).budget.read_bytes()) == raw
    assert all(col == [] for col in read_table(_it(ws).budget, "budget").values())
    assert stats["probe_samples"] == 0 and stats["samples"] == 64
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
    samples = [sample_row(p["id"], 0, p["question"] + "\n", p["solution"]) for p in problems]
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
    with pytest.raises(ValueError, match="warmstart takes no --iteration"):
        run_stage("warmstart", "1", ws, ws / "params.yaml")
    with pytest.raises(ValueError, match="not in params.yaml"):
        run_stage("sample", "9", ws, ws / "params.yaml")


def _gvm_params(ws: Path, **gvm) -> Path:
    import yaml

    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["allocate"]["method"] = "gvm"
    raw["allocate"]["gvm"].update(gvm)
    path = ws / "params.gvm.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_gvm_allocate_probes_and_sample_draws_n_i(ws):
    import numpy as np

    from cotflow.algorithms.gvm import allocate

    params = _gvm_params(ws, probe="sample")
    stats = run_stage("allocate", "1", ws, params)
    it = _it(ws)
    alloc = read_table(it.allocation, "allocation")
    budget = read_table(it.budget, "budget")
    assert sum(alloc["n"]) == 64 == stats["samples"]  # the uniform budget: 16 prompts × 4
    assert budget["prompt_id"] == alloc["prompt_id"] and budget["n"] == alloc["n"]
    assert set(budget["probe_samples"]) == {4} and stats["probe_samples"] == 64
    assert not any(budget["probe_reused"])
    assert budget["p"] == [a / 4 for a in budget["accepted"]]
    assert all((g > 0) == (a > 0) for g, a in zip(budget["G"], budget["accepted"], strict=True))
    assert 0 < stats["mean_p"] < 1, "the warm start should solve some probes, not all"
    want, _ = allocate(budget["p"], budget["G"], 64, alpha=1e-3, beta=2.0)
    assert budget["n"] == want.tolist()
    assert stats["zero_share"] == round(float(np.mean(np.array(want) == 0)), 6)
    assert read_json(it.stats("allocate"))["method"] == "gvm"
    # the same draw on a rerun
    run_stage("allocate", "1", ws, params)
    assert read_table(it.budget, "budget") == budget

    run_stage("sample", "1", ws, params)
    samples = read_table(it.samples, "samples")
    drawn = {pid: samples["prompt_id"].count(pid) for pid in alloc["prompt_id"]}
    assert drawn == dict(zip(alloc["prompt_id"], alloc["n"], strict=True))


def test_gvm_reuse_takes_the_previous_iterations_samples(ws):
    import shutil

    from models.grad_norms import sample_grad_norms
    from models.policy import load_policy
    from models.torch_trainer import text_example
    from tasks.allocate import choose_prompts

    lay = Layout(ws)
    it = _it(ws, "002")
    if not it.prev_policy.exists():
        shutil.copytree(lay.base_policy, it.prev_policy)
    problems = {r["id"]: r for r in rows_of(read_table(lay.train_set, "problems"))}
    chosen = choose_prompts(list(problems), 16, 0, "002")
    # Iteration 001 "sampled" 10 of them: k gold solutions and 3 - k wrong ones, k = i % 4.
    samples, verdicts = [], []
    for i, pid in enumerate(chosen[:10]):
        p = problems[pid]
        for j in range(3):
            ok = j < i % 4
            samples.append(sample_row(pid, j, p["question"] + "\n",
                                      p["solution"] if ok else "1 + 1 = 2. \\boxed{2}"))
            verdicts.append({"prompt_id": pid, "sample_idx": j, "extracted": None,
                             "verdict": "correct" if ok else "incorrect",
                             "reward": 1.0 if ok else 0.0})
    write_table(it.prev_samples, "samples", samples)
    write_table(it.prev_verdicts, "verdicts", verdicts)

    stats = run_stage("allocate", "2", ws, _gvm_params(ws, probe="reuse"))
    budget = rows_of(read_table(it.budget, "budget"))
    assert budget[0]["prompt_id"] == chosen[0]
    assert [b["probe_reused"] for b in budget] == [True] * 10 + [False] * 6
    assert [b["probe_samples"] for b in budget] == [3] * 10 + [4] * 6
    assert [b["accepted"] for b in budget[:10]] == [i % 4 for i in range(10)]
    assert stats["probe_samples"] == 24 and stats["probe_reused_samples"] == 30
    assert stats["probe_reused_prompts"] == 10 and stats["samples"] == 64
    model, tok = load_policy(it.prev_policy)
    p = problems[chosen[3]]  # three accepted gold solutions: G is their own norm
    norm = sample_grad_norms(model, tok.pad_token_id,
                             [text_example(tok, p["question"] + "\n", p["solution"])],
                             max_len=256)[0]
    assert budget[3]["G"] == pytest.approx(norm, rel=1e-5)
    assert budget[0]["G"] == 0.0 and budget[0]["n"] == 0  # nothing accepted: no samples

"""Every iteration type through judge and train on a temporary workspace, and every preset
through allocate → evaluate on the built-in task, with the tiny model."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from cotflow.config import load_params
from cotflow.layout import Layout
from cotflow.presets import PRESETS, apply_preset
from cotflow.records import read_json, read_table, rows_of, write_table
from cotflow.verify.rewards import is_correct
from cotflow.workspace import make_workspace
from tasks.common import iteration_layout, run_base, run_stage
from tests.conftest import micro_params, sample_row

TYPES = ["raft", "raft++", "grpo", "dr-grpo", "dapo", "seed-grpo", "nft", "dpo",
         "critique-grpo"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("algos"),
                          micro_params(tracking={"enabled": False}))
    run_base(root, root / "params.yaml")
    return root


def _set_iterations(root: Path, iterations: dict) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["iterations"] = iterations
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _wrong(solution: str) -> str:
    """The solution with its final answer off by one: a wrong sample."""
    head, _, tail = solution.rpartition("\\boxed{")
    answer, _, rest = tail.partition("}")
    return f"{head}\\boxed{{{int(answer) + 1}}}{rest}"


def _mixed_groups(root: Path, key: str) -> None:
    """Groups of 4 per prompt: gold solutions and wrong ones in varied proportions, with
    all-correct and all-wrong groups among them (dropped by DAPO and NFT)."""
    lay = Layout(root)
    it = iteration_layout(load_params(root / "params.yaml"), root, key)
    rng = random.Random(0)
    samples, verdicts = [], []
    for i, p in enumerate(rows_of(read_table(lay.train_set, "problems"))[:12]):
        for j in range(4):
            ok = j < i % 5  # 0 to 4 of the 4 samples correct
            text = p["solution"] if ok else _wrong(p["solution"])
            samples.append(sample_row(p["id"], j, p["question"] + "\n", text))
            verdicts.append({"prompt_id": p["id"], "sample_idx": j,
                             "verdict": "correct" if ok else "incorrect",
                             "reward": 1.0 if ok else 0.0,
                             "extracted": text.rpartition("\\boxed{")[2].partition("}")[0]})
    rng.shuffle(samples)  # groups need not be contiguous
    order = {(s["prompt_id"], s["sample_idx"]): n for n, s in enumerate(samples)}
    verdicts.sort(key=lambda v: order[(v["prompt_id"], v["sample_idx"])])
    write_table(it.samples, "samples", samples)
    write_table(it.verdicts, "verdicts", verdicts)


@pytest.mark.parametrize("algorithm", TYPES)
def test_each_type_trains_every_parameter(ws, algorithm):
    _set_iterations(ws, {"001": {"algorithm": algorithm, "prev": "base"}})
    _mixed_groups(ws, "001")
    run_stage("critique", "1", ws, ws / "params.yaml")
    judged = run_stage("judge", "1", ws, ws / "params.yaml")
    stats = run_stage("train", "1", ws, ws / "params.yaml")
    it = iteration_layout(load_params(ws / "params.yaml"), ws, "001")
    before = load_file(it.prev_policy / "model.safetensors")
    after = load_file(it.policy / "model.safetensors")
    unchanged = [k for k in before if not (before[k] != after[k]).any()]
    assert not unchanged, unchanged
    assert math.isfinite(stats["loss"]) and stats["optimizer_steps"] >= 1
    if algorithm != "dpo":
        assert math.isfinite(stats["entropy"]) and stats["entropy"] > 0
    if algorithm == "dpo":
        # 12 prompts with 0..4 of 4 correct: pairs only where both kinds exist, ≤ 2 each
        assert judged["pairs"] == stats["pairs"] > 0 and stats["reward_accuracy"] >= 0
    else:
        assert stats["examples"] > 0
    if algorithm in ("dapo", "nft"):
        assert stats["groups_kept"] < 12  # uniform groups dropped
    if algorithm == "seed-grpo":
        assert 0 < stats["semantic_entropy"] and 0.95 < stats["mean_seed_scale"] <= 1
    if algorithm in ("grpo", "dr-grpo", "dapo", "seed-grpo"):
        assert 0 < stats["zero_variance_share"] < 1 and "clip_fraction" in stats
    if algorithm == "grpo":
        assert stats["kl"] >= 0
    if algorithm == "critique-grpo":  # one refinement joined each of the 12 groups
        assert stats["refinements_trained"] == 12 and stats["examples"] == 48


def test_dpo_pairs_are_correct_over_incorrect(ws):
    _set_iterations(ws, {"001": {"algorithm": "dpo", "prev": "base"}})
    _mixed_groups(ws, "001")
    run_stage("judge", "1", ws, ws / "params.yaml")
    it = iteration_layout(load_params(ws / "params.yaml"), ws, "001")
    pairs = read_table(it.judgements, "judgements")
    verdicts = read_table(it.verdicts, "verdicts")
    reward = {(p, i): r for p, i, r in zip(verdicts["prompt_id"], verdicts["sample_idx"],
                                           verdicts["reward"], strict=True)}
    per_prompt: dict[str, int] = {}
    for pid, c, r in zip(pairs["prompt_id"], pairs["chosen_idx"], pairs["rejected_idx"],
                         strict=True):
        assert is_correct(reward[(pid, c)]) and not is_correct(reward[(pid, r)])
        per_prompt[pid] = per_prompt.get(pid, 0) + 1
    assert max(per_prompt.values()) <= 2


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_runs_end_to_end(ws, preset):
    params = (ws / "params.yaml").read_text()
    try:
        # TON's presets also set their warm start's settings (the format): not for the next.
        apply_preset(ws / "params.yaml", [preset])
        cfg = load_params(ws / "params.yaml")
        assert cfg.iterations["001"].algorithm == PRESETS[preset][0]
        for stage in ("allocate", "sample", "verify", "critique", "judge", "train",
                      "evaluate"):
            stats = run_stage(stage, "1", ws, ws / "params.yaml")
        assert 0 <= stats["accuracy"] <= 1
        it = iteration_layout(cfg, ws, "001")
        assert read_json(it.metrics)["iteration"] == 1
        samples = read_table(it.samples, "samples")
        reuses = PRESETS[preset][0] == "veripo"  # judges the previous iteration's rollouts
        refined = read_table(it.critiques, "critiques")  # Critique-GRPO's refinements too
        sampled = len(samples["prompt_id"]) + len(refined["prompt_id"])
        if PRESETS[preset][0] == "spo-tree":  # whole trees, every node a sample, within it
            assert 0 < read_json(it.stats("sample"))["tree_nodes"] <= 64
        else:  # the micro budget: 16 prompts × 4
            assert len(samples["prompt_id"]) == 0 if reuses else sampled >= 64
    finally:
        (ws / "params.yaml").write_text(params)


def test_preset_keeps_the_sample_budget_and_comments(ws, capsys):
    from cotflow.cli import main

    before = (ws / "params.yaml").read_text()
    assert main(["--root", str(ws), "preset", "grpo", "grpo", "dpo"]) == 0
    after = (ws / "params.yaml").read_text()
    assert after.partition("\niterations:")[0] == before.partition("\niterations:")[0]
    cfg = load_params(ws / "params.yaml")
    assert [i.algorithm for i in cfg.iterations.values()] == ["grpo", "grpo", "dpo"]
    for key in cfg.iterations:
        a = cfg.for_iteration(key).allocate
        assert a.prompts_per_iteration * a.n == 16 * 4 and a.n == 8
    assert main(["--root", str(ws), "preset", "ppo"]) == 2
    assert "preset 'ppo': unknown" in capsys.readouterr().err
    assert (ws / "params.yaml").read_text() == after  # a refused preset writes nothing


def test_ton_verifies_and_trains_on_its_format(ws):
    """verify reads the <answer> of TON's format and reports skips per level; ton trains
    on accuracy + format."""
    from cotflow.data.targets import think_target

    params = (ws / "params.yaml").read_text()
    raw = yaml.safe_load(params)
    raw["verify"]["format"] = "think"
    raw["iterations"] = {"001": {"algorithm": "ton", "prev": "base"}}
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        it = iteration_layout(load_params(ws / "params.yaml"), ws, "001")
        samples = []
        for i, p in enumerate(rows_of(read_table(Layout(ws).train_set, "problems"))[:12]):
            for j in range(4):  # thoughts dropped in half; 0 to 4 right answers
                answer = p["answer"] if j < i % 5 else str(int(p["answer"]) + 1)
                text = think_target(p["solution"], answer, drop=j % 2 == 0)
                samples.append(sample_row(p["id"], j, p["question"] + "\n",
                                          text if j != 3 else answer))  # one has no tags
        write_table(it.samples, "samples", samples)
        verified = run_stage("verify", "1", ws, ws / "params.yaml")
        right = sum(j < i % 5 for i in range(12) for j in range(4) if j != 3)
        assert verified["correct_fraction"] == pytest.approx(right / 48, abs=1e-6)
        assert verified["skip_ratio"] == 0.5 and verified["format_fraction"] == 0.75
        assert verified["skip_ratio_difficulty_1"] == 0.5
        run_stage("critique", "1", ws, ws / "params.yaml")
        run_stage("judge", "1", ws, ws / "params.yaml")
        stats = run_stage("train", "1", ws, ws / "params.yaml")
        assert stats["kind"] == "ton" and stats["skip_ratio"] == 0.5
        assert stats["format_fraction"] == 0.75 and stats["optimizer_steps"] >= 1
        # The format reward splits groups that accuracy alone leaves uniform (the tagless one).
        assert stats["shaped_zero_variance_share"] == 0 < stats["zero_variance_share"]
        before = load_file(it.prev_policy / "model.safetensors")
        after = load_file(it.policy / "model.safetensors")
        assert not [k for k in before if not (before[k] != after[k]).any()]
    finally:
        (ws / "params.yaml").write_text(params)

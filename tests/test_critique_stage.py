"""The critique stage on a temporary workspace with the tiny model: critiques that name the
wrong step, refinements sampled by the policy and graded, one selected per prompt, and the
train stage's groups of initial responses + refinement (specs/algorithms-a.md §3.2-3.3)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from cotflow.config import load_params
from cotflow.layout import Layout
from cotflow.records import read_table, rows_of, write_table
from cotflow.verify.rewards import is_correct
from cotflow.workspace import make_workspace
from tasks.common import iteration_layout, run_base, run_stage
from tests.conftest import micro_params, sample_row

TAUGHT = 90  # refinement examples in the micro warm start (+ 30 self-critique ones)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    raw = micro_params(tracking={"enabled": False})
    raw["warmstart"]["refinement_examples"] = TAUGHT
    root = make_workspace(tmp_path_factory.mktemp("critique"), raw)
    stats = run_base(root, root / "params.yaml")
    assert stats["warmstart"]["refinement_examples"] == TAUGHT + TAUGHT // 3
    return root


def _use(root: Path, critique: str, **critique_section) -> None:
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["iterations"] = {"001": {"algorithm": "critique-grpo", "prev": "base", "overrides": {
        "algorithms": {"critique-grpo": {"critique": critique}}}}}
    raw["critique"].update(critique_section)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def _wrong_step(solution: str) -> str:
    """The one-step solution with its sum off by one, carried into the box."""
    line = solution.splitlines()[0]
    head, _, z = line.partition("=")
    return f"{head}={int(z) + 1}\n\\boxed{{{int(z) + 1}}}"


def _samples(root: Path) -> tuple[list[dict], dict[str, dict]]:
    """8 prompts × 4 samples: prompt i has i % 3 correct ones, the rest a wrong step."""
    cfg = load_params(root / "params.yaml")
    it = iteration_layout(cfg, root, "001")
    problems = rows_of(read_table(Layout(root).train_set, "problems"))[:8]
    samples, verdicts = [], []
    for i, p in enumerate(problems):
        for j in range(4):
            ok = j < i % 3
            text = p["solution"] if ok else _wrong_step(p["solution"])
            samples.append(sample_row(p["id"], j, p["question"] + "\n", text))
            verdicts.append({"prompt_id": p["id"], "sample_idx": j,
                             "verdict": "correct" if ok else "incorrect",
                             "reward": float(ok), "extracted": None})
    write_table(it.samples, "samples", samples)
    write_table(it.verdicts, "verdicts", verdicts)
    return samples, {p["id"]: p for p in problems}


def _critique(root: Path, critique: str) -> tuple[list[dict], dict[str, dict], dict, list]:
    """The critique stage of type `critique` on `_samples`: (samples, problems, its stats,
    its table's rows)."""
    _use(root, critique)
    samples, problems = _samples(root)
    stats = run_stage("critique", "1", root, root / "params.yaml")
    it = iteration_layout(load_params(root / "params.yaml"), root, "001")
    return samples, problems, stats, rows_of(read_table(it.critiques, "critiques"))


def test_cot_critique_names_the_wrong_step_and_refinements_are_graded(ws):
    samples, problems, stats, table = _critique(ws, "cot")
    assert len(table) == len(samples) == stats["critiques"] == 32
    for row, sample in zip(table, samples, strict=True):
        p = problems[row["prompt_id"]]
        assert (row["prompt_id"], row["sample_idx"]) == (sample["prompt_id"],
                                                         sample["sample_idx"])
        if sample["completion"] == p["solution"]:
            assert row["critique"] == f"Correct; the answer is {p['answer']}."
            assert row["critic"] == "indicative"
        else:
            x, _, z = p["solution"].splitlines()[0].partition("=")
            assert row["critique"] == f"Step 1: {x}={z}, not {int(z) + 1}."
            assert row["critic"] == "builtin"
        assert row["refinement_prompt"] == (
            f"{p['question']}\nTry:\n{sample['completion']}\nCheck: {row['critique']}\nFix:\n")
        # The policy's tokens as sampled: <bos> + one per character; <eos> iff finished.
        assert len(row["refinement_prompt_ids"]) == len(row["refinement_prompt"]) + 1
        assert row["num_tokens"] == len(row["refinement_ids"]) <= 32
        assert row["finished"] == (row["refinement_ids"][-1:] == [2])
        # Graded by the verify stage's reward: 1 only for a right answer through right steps.
        assert row["reward"] in (0.0, 1.0)
        assert is_correct(row["reward"]) == (row["verdict"] == "correct" and all(
            "=" not in line or _right(line) for line in row["refinement"].splitlines()))
    for pid in problems:
        group = [r for r in table if r["prompt_id"] == pid]
        chosen = [r for r in group if r["selected"]]
        assert len(chosen) == 1
        correct = [r for r in group if is_correct(r["reward"])]
        assert chosen[0] is (correct[0] if correct else group[0])
    wrong = [r for r, s in zip(table, samples, strict=True)
             if s["completion"] != problems[r["prompt_id"]]["solution"]]
    assert stats["refinement_success_rate"] == pytest.approx(
        sum(is_correct(r["reward"]) for r in wrong) / len(wrong), abs=1e-6)
    all_wrong = [pid for i, pid in enumerate(problems) if i % 3 == 0]
    assert stats["all_wrong_prompts"] == len(all_wrong) == 3
    rescued = sum(is_correct(r["reward"]) for r in table if r["selected"]
                  and r["prompt_id"] in all_wrong)
    assert stats["rescued_share"] == pytest.approx(rescued / 3, abs=1e-6)
    assert stats["critique_type"] == "cot" and stats["fallback_share"] == 0
    # Leave-one-out pass@1 of the failed responses' prompts: i % 3 of 4 right, 4 - i % 3 wrong
    fresh = [k / 3 for i in range(8) for k in [i % 3] * (4 - i % 3)]
    assert stats["fresh_pass_rate_on_failed"] == pytest.approx(sum(fresh) / len(fresh), 1e-5)

    train = run_stage("train", "1", ws, ws / "params.yaml")
    assert train["refinements_trained"] == 8 and train["examples"] == 32
    assert math.isfinite(train["loss"]) and train["optimizer_steps"] >= 1


def _right(line: str) -> bool:
    from cotflow.data.arithmetic import check_step

    return check_step(line) is not False


def test_self_critique_by_the_policy_or_the_fallback(ws):
    samples, problems, stats, table = _critique(ws, "self")
    for row, sample in zip(table, samples, strict=True):
        wrong = sample["completion"] != problems[row["prompt_id"]]["solution"]
        assert row["critic"] in (("policy", "fallback") if wrong else ("indicative",))
        assert "[END]" not in row["critique"] and row["critique"]
    assert stats["fallback_share"] == pytest.approx(
        sum(r["critic"] == "fallback" for r in table) / 32, abs=1e-6)


def test_a_refinement_prompt_over_the_context_is_refused(ws):
    _use(ws, "indicative", refinement_template="{question}" + "." * 200 + "{previous}{critique}")
    _samples(ws)
    with pytest.raises(ValueError, match=r"refinement prompt of sample \('arith-.*', 0\) is "
                                         r"\d+ tokens: with 32 new tokens it exceeds"):
        run_stage("critique", "1", ws, ws / "params.yaml")


def test_other_algorithms_write_an_empty_table(ws):
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["iterations"] = {"001": {"algorithm": "grpo", "prev": "base"}}
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert run_stage("critique", "1", ws, ws / "params.yaml")["critiques"] == 0
    it = iteration_layout(load_params(ws / "params.yaml"), ws, "001")
    assert read_table(it.critiques, "critiques")["prompt_id"] == []


def test_lm_critic_without_the_marker_falls_back(ws):
    """A real hf critic (the warm start) whose output cannot hold the marker in 4 tokens:
    every try is malformed, so the stage's indicative_gt fallback applies."""
    from models.critic import lm_critiques

    cfg = load_params(ws / "params.yaml")
    critic = cfg.critique.critic.model_copy(update={
        "backend": "hf", "model": str(Layout(ws).base_policy), "max_new_tokens": 4,
        "retries": 1})
    cfg = cfg.model_copy(update={"critique": cfg.critique.model_copy(
        update={"critic": critic})})
    assert lm_critiques(cfg, ["Ann has 3 eggs.\nTry:\n3+1=5\nCheck:"] * 3, seed=0) == [None] * 3
    missing = cfg.model_copy(update={"critique": cfg.critique.model_copy(update={
        "critic": critic.model_copy(update={"model": None})})})
    with pytest.raises(ValueError, match="critique.critic.model"):
        lm_critiques(missing, ["q"], seed=0)
    remote = cfg.model_copy(update={"critique": cfg.critique.model_copy(update={
        "critic": critic.model_copy(update={"backend": "openai"})})})
    with pytest.raises(ValueError, match="critique.critic.url"):
        lm_critiques(remote, ["q"], seed=0)

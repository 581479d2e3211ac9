"""VerIPO's DPO iteration on a temporary workspace with the tiny model: it samples nothing,
judges the previous (GRPO) iteration's rollouts with the rollout-aware verifier, trains on
the pairs, and the next iteration's allocate leaves the pruned prompts out."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from cotflow.config import load_params
from cotflow.layout import Layout
from cotflow.presets import apply_preset
from cotflow.records import read_table, rows_of, write_table
from cotflow.workspace import make_workspace
from tasks.common import iteration_layout, run_base, run_stage
from tests.conftest import micro_params, sample_row
from tests.test_algorithm_stages import _wrong

KINDS = ("good", "wrong", "bare", "repeated")


def _rollout(p: dict, kind: str) -> tuple[str, bool]:
    """A completion of problem `p` and whether its answer is right: the gold solution; one
    with a wrong final answer; the right answer with no reasoning (inconsistent); the gold
    steps written three times (repetitive)."""
    answer = f"\\boxed{{{p['answer']}}}"
    steps = p["solution"].rpartition("\n")[0]
    return {"good": (p["solution"], True), "wrong": (_wrong(p["solution"]), False),
            "bare": (answer, True),
            "repeated": ("\n".join([steps] * 3 + [answer]), True)}[kind]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("veripo"),
                          micro_params(tracking={"enabled": False}))
    run_base(root, root / "params.yaml")
    apply_preset(root / "params.yaml", ["grpo", "veripo-dpo", "grpo"])
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["allocate"]["prompts_per_iteration"] = 12
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    # Iteration 001 stands for a GRPO pass: its rollouts and policy, written here.
    cfg = load_params(root / "params.yaml")
    it = iteration_layout(cfg, root, "001")
    problems = rows_of(read_table(Layout(root).train_set, "problems"))
    samples, verdicts = [], []
    for i, p in enumerate(problems[:10]):
        # Prompts 0-3 are always solved; the rest mix all four kinds.
        kinds = ["good"] * 4 if i < 4 else [KINDS[(i + j) % 4] for j in range(4)]
        for j, kind in enumerate(kinds):
            text, ok = _rollout(p, kind)
            samples.append(sample_row(p["id"], j, p["question"] + "\n", text))
            verdicts.append({"prompt_id": p["id"], "sample_idx": j,
                             "verdict": "correct" if ok else "incorrect",
                             "reward": float(ok),
                             "extracted": text.rpartition("\\boxed{")[2].partition("}")[0]})
    write_table(it.samples, "samples", samples)
    write_table(it.verdicts, "verdicts", verdicts)
    shutil.copytree(Layout(root).base_policy, it.policy)
    return root


def test_dpo_iteration_judges_the_grpo_rollouts_and_trains(ws):
    params = ws / "params.yaml"
    assert run_stage("allocate", "2", ws, params)["samples"] == 0
    assert run_stage("sample", "2", ws, params)
    run_stage("verify", "2", ws, params)
    cfg = load_params(params)
    it = iteration_layout(cfg, ws, "002")
    assert read_table(it.samples, "samples")["prompt_id"] == []  # nothing resampled
    judged = run_stage("judge", "2", ws, params)
    assert judged["rollouts_from"] == "prev" and judged["rollouts"] == 40
    flags = read_table(it.flags, "flags")
    by_kind = {}
    for pid, idx, cat, cons, rep in zip(flags["prompt_id"], flags["sample_idx"],
                                        flags["category"], flags["consistent"],
                                        flags["repetitive"], strict=True):
        by_kind.setdefault(_kind_of(ws, pid, idx), set()).add((cat, cons, rep))
    assert by_kind == {"good": {("good", "yes", False)}, "wrong": {("wrong", "no", False)},
                       "bare": {("inconsistent", "no", False)},
                       "repeated": {("penalty", "no", True)}}  # three steps, not the task's
    # Six mixed prompts, each with a good rollout and the three bad kinds: the cap of 2
    # takes consistency, then penalty (params.yaml's order); the solved four give none.
    assert judged["pairs"] == 12 and judged["pairs_consistency"] == 6
    assert judged["pairs_penalty"] == 6 and judged["prompts_without_good"] == 0
    # Correct: 16 solved + 3 of 4 in six mixed prompts; inconsistent: the bare and repeated.
    assert judged["inconsistency_rate"] == pytest.approx(12 / 34)
    assert judged["prompts_always_solved"] == 4 and judged["prompts_pruned"] == 3  # 80 %
    pairs = read_table(it.judgements, "judgements")
    assert set(pairs["kind"]) == {"consistency", "penalty"}
    stats = run_stage("train", "2", ws, params)
    assert stats["pairs"] == 12 and stats["optimizer_steps"] == 1
    for key in ("chosen_logp", "rejected_logp", "chosen_logratio", "nll", "margin"):
        assert math.isfinite(stats[key]), key
    before = load_file(it.prev_policy / "model.safetensors")
    after = load_file(it.policy / "model.safetensors")
    assert any((before[k] != after[k]).any() for k in before)


def test_reflection_pairs_carry_the_composite(ws):
    params = ws / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["algorithms"]["veripo"]["pair_types"] = ["reflection"]
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    judged = run_stage("judge", "2", ws, params)
    it = iteration_layout(load_params(params), ws, "002")
    pairs = rows_of(read_table(it.judgements, "judgements"))
    assert judged["pairs"] == judged["pairs_reflection"] == 6
    from tests.conftest import _char_tokenizer

    tok = _char_tokenizer()
    for pair in pairs:
        text = tok.decode(pair["chosen_ids"][:-1])
        assert "\nWait, that is wrong.\n" in text and pair["chosen_ids"][-1] == tok.eos_token_id
        wrong = _completion(ws, pair["prompt_id"], pair["rejected_idx"])
        good = _completion(ws, pair["prompt_id"], pair["chosen_idx"])
        assert text == wrong.rpartition("\n")[0] + "\nWait, that is wrong.\n" + good


def test_next_allocation_leaves_the_pruned_prompts_out(ws):
    params = ws / "params.yaml"
    run_stage("judge", "2", ws, params)
    it = iteration_layout(load_params(params), ws, "002")
    flags = read_table(it.flags, "flags")
    dropped = {p for p, d in zip(flags["prompt_id"], flags["drop_prompt"], strict=True) if d}
    assert len(dropped) == 3
    shutil.copytree(it.prev_policy, it.policy, dirs_exist_ok=True)
    stats = run_stage("allocate", "3", ws, params)
    assert stats["pruned"] == 3
    nxt = iteration_layout(load_params(params), ws, "003")
    assert not dropped & set(read_table(nxt.allocation, "allocation")["prompt_id"])


def _completion(ws: Path, pid: str, idx: int) -> str:
    s = read_table(ws / "artifacts/iter-001/samples.parquet", "samples")
    return next(c for p, i, c in zip(s["prompt_id"], s["sample_idx"], s["completion"],
                                     strict=True) if (p, i) == (pid, idx))


def _kind_of(ws: Path, pid: str, idx: int) -> str:
    problems = {p["id"]: p for p in rows_of(read_table(Layout(ws).train_set, "problems"))}
    text = _completion(ws, pid, idx)
    return next(k for k in KINDS if _rollout(problems[pid], k)[0] == text)


def test_lm_judge_through_the_hf_backend(ws):
    """The LM judge path for real: the tiny warm-started model as the judge, greedy through
    the hf backend. It was trained on arithmetic only, so no reply holds a keyword: every
    rollout's consistency is "unknown", counted, and no correct rollout is paired."""
    params = ws / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    saved = yaml.safe_dump(raw, sort_keys=False)
    raw["algorithms"]["veripo"]["judge"].update(
        model=str(Layout(ws).base_policy), template="{question}\n{reasoning}\n{answer}\n")
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        judged = run_stage("judge", "2", ws, params)
    finally:
        params.write_text(saved)
    it = iteration_layout(load_params(params), ws, "002")
    assert set(read_table(it.flags, "flags")["consistent"]) == {"unknown"}
    assert judged["unknown_consistency_rate"] == 1.0 and judged["rollouts_unknown"] == 28
    assert judged["pairs_consistency"] == judged["pairs"] == 0

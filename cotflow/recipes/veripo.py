"""veripo: VerIPO's DPO step on pairs from a rollout-aware verifier (arXiv 2505.19000;
specs/algorithms-b.md §4).

The loop is a pipeline: grpo, veripo, grpo, veripo (preset `veripo`). A veripo iteration
with `rollouts: prev` samples nothing: its judge reads the previous (GRPO) iteration's
rollouts — dvc.yaml lists them as the judge's deps — and its policy starts from that
iteration's, which is also the DPO reference (§4.6).

Judge stage (`verifier`): per rollout `correct` (the verify verdict), `consistent` (by the
LM judge when `judge.model` is set, its reply parsed by its first keyword; else on the
built-in task exactly, cotflow/data/arithmetic.py `answer_follows`; "unknown" otherwise
and for a reply with no keyword, counted and never guessed), `repetitive` (the
n-gram/sentence rule) and `length`; then per prompt at most `max_pairs_per_prompt` pairs
of `pair_types` (cotflow/algorithms/veripo.py), pairs over the context dropped. It also
marks `prune_share` of the prompts every rollout solved, which the next iteration's
allocate leaves out (VerIPO drops 80 % of them, §4.2).
Train: DPO + `nll_coef` · NLL on the chosen (recipes/dpo.py `pair_objective`).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Annotated, Literal

from pydantic import Field, field_validator

from cotflow.config_types import NonNegFloat, PosFloat, PosInt, Section
from cotflow.recipes.base import (
    Example,
    Inputs,
    Recipe,
    TrainingPlan,
    VerifierInputs,
    VerifierResult,
)

PairType = Literal["penalty", "consistency", "accuracy", "reflection"]


class JudgeSettings(Section):
    """The LM consistency judge (§4.4): its own model, prompt and reply budget."""

    model: str | None  # a Hub id or local path; None: no LM judge
    template: str  # with {question}, {reasoning} and {answer}
    max_new_tokens: PosInt

    @field_validator("template")
    @classmethod
    def _fields(cls, v: str) -> str:
        missing = [f for f in ("{question}", "{reasoning}", "{answer}") if f not in v]
        if missing:
            raise ValueError(f"must contain {', '.join(missing)}")
        return v


class Settings(Section):
    kind: Literal["veripo"]
    rollouts: Literal["prev", "own"]  # prev: the previous iteration's; own: sample afresh
    beta: PosFloat
    nll_coef: NonNegFloat
    max_pairs_per_prompt: PosInt
    pair_types: list[PairType] = Field(min_length=1)
    repetition_ngram: PosInt
    repetition_max_count: Annotated[int, Field(ge=2)]
    min_length: PosInt | None
    max_length: PosInt | None
    reflect_phrase: Annotated[str, Field(min_length=1)]
    prune_share: Annotated[float, Field(ge=0, le=1)]
    judge: JudgeSettings


def verifier(s: Settings, vi: VerifierInputs) -> VerifierResult:
    from cotflow.algorithms.advantages import group_indices
    from cotflow.algorithms.veripo import (
        PAIR_TYPES,
        Flags,
        always_solved_to_drop,
        category,
        prompt_pairs,
        rates,
        reflection_text,
        repetitive,
    )

    rows = vi.rollouts
    flags = []
    for r in rows:
        flags.append(Flags(r.correct, vi.consistent(r), repetitive(
            r.completion_ids, r.completion, ngram=s.repetition_ngram,
            max_count=s.repetition_max_count), r.num_tokens, r.finished))
    bounds = {"min_length": s.min_length, "max_length": s.max_length}
    groups = group_indices([r.prompt_id for r in rows])
    accuracy = {pid: sum(rows[i].correct for i in idx) / len(idx) for pid, idx in groups.items()}
    dropped = always_solved_to_drop(accuracy, share=s.prune_share, seed=vi.seed)
    cats = [category(f, **bounds) for f in flags]
    no_good = sum(all(cats[i] != "good" for i in idx) for idx in groups.values())
    pairs, over_context = [], 0
    for pid, idx in groups.items():
        found = prompt_pairs([flags[i] for i in idx], types=s.pair_types,
                             max_pairs=s.max_pairs_per_prompt,
                             rng=random.Random(f"{vi.seed}\x00{pid}"), **bounds)
        for p in found:
            chosen, rejected = rows[idx[p.chosen]], rows[idx[p.rejected]]
            chosen_ids = (chosen.completion_ids if p.wrong is None else tuple(vi.encode(
                reflection_text(rows[idx[p.wrong]].completion, chosen.completion,
                                s.reflect_phrase))))
            longest = max(len(chosen_ids), rejected.num_tokens)
            if len(chosen.prompt_ids) + longest > vi.max_len:
                over_context += 1
                continue
            pairs.append({"prompt_id": pid, "chosen_idx": chosen.sample_idx,
                          "rejected_idx": rejected.sample_idx,
                          "score": chosen.reward - rejected.reward, "kind": p.kind,
                          "prompt_ids": list(chosen.prompt_ids), "chosen_ids": list(chosen_ids),
                          "rejected_ids": list(rejected.completion_ids)})
    kinds = Counter(p["kind"] for p in pairs)
    stats = {**{k: round(v, 6) for k, v in rates(flags).items()},
             "rollouts": len(rows), "prompts": len(groups), "pairs": len(pairs),
             **{f"pairs_{k}": kinds[k] for k in PAIR_TYPES},
             "prompts_paired": len({p["prompt_id"] for p in pairs}),
             "prompts_without_good": no_good, "pairs_over_context": over_context,
             "prompts_always_solved": sum(a >= 1.0 for a in accuracy.values()),
             "prompts_pruned": len(dropped),
             **{f"rollouts_{c}": cats.count(c) for c in ("good", "penalty", "wrong",
                                                         "inconsistent", "unknown")}}
    yes_no = {True: "yes", False: "no", None: "unknown"}
    table = {"prompt_id": [r.prompt_id for r in rows],
             "sample_idx": [r.sample_idx for r in rows],
             "correct": [f.correct for f in flags],
             "consistent": [yes_no[f.consistent] for f in flags],
             "repetitive": [f.repetitive for f in flags], "length": [f.length for f in flags],
             "finished": [f.finished for f in flags], "category": cats,
             "drop_prompt": [r.prompt_id in dropped for r in rows]}
    return VerifierResult(table, pairs, stats)


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    from cotflow.recipes.dpo import pair_objective

    j = inputs.judgements
    examples = []
    for prompt, chosen, rejected in zip(j["prompt_ids"], j["chosen_ids"], j["rejected_ids"],
                                        strict=True):
        examples += [Example(tuple(prompt), tuple(chosen)), Example(tuple(prompt),
                                                                    tuple(rejected))]
    units = [[2 * i, 2 * i + 1] for i in range(len(examples) // 2)]
    kinds = Counter(j["kind"])
    return TrainingPlan(examples, pair_objective(beta=s.beta, nll_coef=s.nll_coef), old=True,
                        units=units, stats={"pairs": len(units),
                                            **{f"pairs_{k}": n for k, n in kinds.items()}})


RECIPE = Recipe("veripo", Settings, plan, verifier=verifier,
                reuses_prev_rollouts=lambda s: s.rollouts == "prev")

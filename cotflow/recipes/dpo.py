"""dpo: Direct Preference Optimization on pairs from verified rollouts (Rafailov et al.,
arXiv 2305.18290; specs/algorithms-b.md §1.6).

Judge stage: within each prompt, a correct rollout (chosen) against an incorrect one
(rejected), at most `max_pairs_per_prompt` per prompt, no rollout reused before its side is
exhausted (cotflow/algorithms/dpo.py `build_pairs`). Train: each pair is one unit (its two
sequences share a micro-batch); z = β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) −
log π_ref(y_l))] with sequence log-probs summed over completion tokens, the reference the
stage-start policy; loss softplus(−z), a mean over the optimizer step's pairs.
"""

from __future__ import annotations

from typing import Literal

from cotflow.config_types import PosFloat, PosInt, Section
from cotflow.recipes.base import Inputs, Recipe, TrainingPlan, rollout_example
from cotflow.rollouts import Rollout, pairs_of


class Settings(Section):
    kind: Literal["dpo"]
    beta: PosFloat
    max_pairs_per_prompt: PosInt


def judge(s: Settings, rows: list[Rollout], seed: int) -> list[tuple[int, int]]:
    from cotflow.algorithms.dpo import build_pairs

    return build_pairs([r.prompt_id for r in rows], [r.reward for r in rows],
                       max_pairs_per_prompt=s.max_pairs_per_prompt, seed=seed)


def objective(s: Settings):
    """DPO over the micro-batch's pairs, as a share of the step's pair-mean."""
    from cotflow.algorithms.dpo import dpo_loss, sequence_logprob
    from cotflow.recipes.terms import metrics, need

    def dpo_objective(tb):
        # Rows come as (chosen, rejected) per unit: even rows chosen, odd rows rejected.
        seq = sequence_logprob(tb.logprobs, tb.mask)
        ref = sequence_logprob(need(tb.old_logprobs, "old"), tb.mask)
        loss, z = dpo_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], beta=s.beta)
        pairs = seq.shape[0] // 2
        return loss * pairs / tb.step.units, {
            "reward_accuracy": float((z > 0).float().mean()),
            "margin": float(z.mean()), **metrics(tb)}
    return dpo_objective


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    pairs = pairs_of(inputs.judgements, inputs.rollouts)
    examples = [rollout_example(r) for pair in pairs for r in pair]
    units = [[2 * i, 2 * i + 1] for i in range(len(pairs))]
    return TrainingPlan(examples, objective(s), old=True, units=units,
                        stats={"pairs": len(pairs)})


RECIPE = Recipe("dpo", Settings, plan, judge=judge)

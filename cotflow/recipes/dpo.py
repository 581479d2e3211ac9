"""dpo: Direct Preference Optimization on pairs from verified rollouts (Rafailov et al.,
arXiv 2305.18290; specs/algorithms-b.md §1.6).

Judge stage: within each prompt, a correct rollout (chosen) against an incorrect one
(rejected), at most `max_pairs_per_prompt` per prompt, no rollout reused before its side is
exhausted (cotflow/algorithms/dpo.py `build_pairs`). Train: each pair is one unit (its two
sequences share a micro-batch); z = β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) −
log π_ref(y_l))] with sequence log-probs summed over completion tokens, the reference the
stage-start policy; loss softplus(−z) + nll_coef · (−log π(y_w)/|y_w|), a mean over the
optimizer step's pairs. nll_coef 0 is plain sigmoid DPO, exactly; params.yaml's default 1
is iterative RPO's (arXiv 2404.19733), chosen by issue 14 because plain DPO lost held-out
accuracy here (70.5 → 56.8 → 46.2 %); specs/algorithms-b.md §4.6's reconstruction [D]
defaults to plain DPO, which `nll_coef: 0` keeps.
"""

from __future__ import annotations

from typing import Literal

from cotflow.config_types import NonNegFloat, PosFloat, PosInt, Section
from cotflow.recipes.base import Inputs, Recipe, TrainingPlan, rollout_example
from cotflow.rollouts import Rollout, pairs_of


class Settings(Section):
    kind: Literal["dpo"]
    beta: PosFloat
    nll_coef: NonNegFloat  # α of the NLL on the chosen response; 0: plain DPO
    max_pairs_per_prompt: PosInt


def judge(s: Settings, rows: list[Rollout], seed: int) -> list[tuple[int, int]]:
    from cotflow.algorithms.dpo import build_pairs

    return build_pairs([r.prompt_id for r in rows], [r.reward for r in rows],
                       max_pairs_per_prompt=s.max_pairs_per_prompt, seed=seed)


def objective(s: Settings):
    return pair_objective(beta=s.beta, nll_coef=s.nll_coef)


def pair_objective(*, beta: float, nll_coef: float):
    """DPO (+ NLL on the chosen) over the micro-batch's pairs, as a share of the step's
    pair-mean. Logs what tells a falling DPO apart: the chosen and rejected sequence
    log-probs and their log-ratios to the reference (both falling is the known failure),
    the margin z and the NLL term."""
    from cotflow.algorithms.dpo import dpo_nll_loss, sequence_logprob
    from cotflow.recipes.terms import metrics, need

    def dpo_objective(tb):
        # Rows come as (chosen, rejected) per unit: even rows chosen, odd rows rejected.
        seq = sequence_logprob(tb.logprobs, tb.mask)
        ref = sequence_logprob(need(tb.old_logprobs, "old"), tb.mask)
        tokens = tb.mask[0::2].sum(dim=-1).to(seq.dtype)
        loss, z, nll = dpo_nll_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], tokens,
                                    beta=beta, nll_coef=nll_coef)
        pairs = seq.shape[0] // 2
        with_ref = (seq - ref).detach()
        return loss * pairs / tb.step.units, {
            "reward_accuracy": float((z > 0).float().mean()), "margin": float(z.mean()),
            "chosen_logp": float(seq[0::2].detach().mean()),
            "rejected_logp": float(seq[1::2].detach().mean()),
            "chosen_logratio": float(with_ref[0::2].mean()),
            "rejected_logratio": float(with_ref[1::2].mean()), "nll": float(nll),
            **metrics(tb)}
    return dpo_objective


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    pairs = pairs_of(inputs.judgements, inputs.rollouts)
    examples = [rollout_example(r) for pair in pairs for r in pair]
    units = [[2 * i, 2 * i + 1] for i in range(len(pairs))]
    return TrainingPlan(examples, objective(s), old=True, units=units,
                        stats={"pairs": len(pairs)})


RECIPE = Recipe("dpo", Settings, plan, judge=judge)

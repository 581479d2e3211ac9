"""nft: Negative-aware Fine-Tuning (Chen et al., arXiv 2505.18116; specs/algorithms-a.md §4).

Examples: the rollouts of prompts with some but not all correct (groups with r̂ of 0 or 1
carry no signal and the reference code drops them, §4.4), each with its label `correct`
and the prompt's clamped accuracy `r_hat` as extras. Objective: −log of the likelihood
ratio for positives; for negatives, −log of the implicit negative policy's ratio
(1 − r̂·ρ) / (1 − r̂), both clamped with straight-through gradients; weighted per prompt
(`normalize`); token losses summed and divided by the constant `normalizer` (1000 in the
reference code), whatever the micro-batch or rank count (§4.2 "reduction quirk").
"""

from __future__ import annotations

from typing import Literal

from cotflow.config_types import NonNegFloat, PosFloat, Section
from cotflow.recipes.base import Inputs, Recipe, TrainingPlan, rollout_example
from cotflow.rollouts import groups, mixed_prompts, zero_variance_share_of


class Settings(Section):
    kind: Literal["nft"]
    normalize: Literal[0, 1, 2]  # prompt weight: 1, 1 - r, sqrt((1 - r) / r)
    neg_weight: float
    clamp_positive: NonNegFloat
    clamp_negative: NonNegFloat
    ratio_cap: PosFloat  # log-ratio cap before exp
    normalizer: PosFloat  # the reference sums token losses and divides by 1000


def objective(s: Settings):
    """The NFT token loss, summed and divided by the constant normalizer."""
    from cotflow.algorithms.nft import nft_reduce, nft_token_loss
    from cotflow.recipes.terms import metrics, need

    def nft_objective(tb):
        per_token = nft_token_loss(
            tb.logprobs, need(tb.old_logprobs, "old"), tb.extras["correct"],
            tb.extras["r_hat"], normalize=s.normalize, neg_weight=s.neg_weight,
            clamp_positive=s.clamp_positive, clamp_negative=s.clamp_negative,
            ratio_cap=s.ratio_cap)
        return nft_reduce(per_token, tb.mask, normalizer=s.normalizer), metrics(tb)
    return nft_objective


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    from cotflow.algorithms.nft import r_hat_of

    keep = mixed_prompts(inputs.rollouts)
    examples = []
    for pid, group in groups(inputs.rollouts).items():
        if pid in keep:
            r_hat = r_hat_of(sum(r.correct for r in group) / len(group))
            examples += [rollout_example(r, 0.0, correct=float(r.correct), r_hat=r_hat)
                         for r in group]
    return TrainingPlan(examples, objective(s), old=True, stats={
        "zero_variance_share": zero_variance_share_of(inputs.rollouts),
        "groups_kept": len(keep)})


RECIPE = Recipe("nft", Settings, plan)

"""raft++: RAFT++ (Xiong et al., "A Minimalist Approach to LLM Reasoning", arXiv 2504.11343;
specs/algorithms-b.md §5.2-5.3; the GVM paper's baseline, specs/algorithms-a.md §1.7).

Examples: every rollout, with A = 1 for a correct one and 0 otherwise (the paper's
token-mean runs over all response tokens, so incorrect ones count in the denominator and
feel the KL term). Objective: the PPO clipped surrogate against the stage-start policy
(ε = 0.2), plus kl_coef · k3 KL to the reference (Minimal-RL and GVM: 0.001, `low_var_kl`),
token-mean over the optimizer step. The first step of an iteration is on-policy (ρ = 1),
where the loss and gradient equal RAFT's; later steps are clipped.
"""

from __future__ import annotations

from typing import Literal

from cotflow.config_types import ClipEps, NonNegFloat, Section
from cotflow.recipes.base import Inputs, Recipe, TrainingPlan, rollout_example
from cotflow.rollouts import zero_variance_share_of


class Settings(Section):
    kind: Literal["raft++"]
    clip_eps: ClipEps
    kl_coef: NonNegFloat
    reference: Literal["prev", "base"]  # the KL reference policy


def objective(s: Settings):
    """Clipped surrogate + kl_coef · k3, token-mean over the optimizer step."""
    from cotflow.algorithms.losses import clipped_surrogate_tokens, token_mean
    from cotflow.recipes.terms import clip_fraction, metrics, need, with_kl

    def raft_plus_plus_objective(tb):
        per_token, clipped = clipped_surrogate_tokens(
            tb.logprobs, need(tb.old_logprobs, "old"), tb.advantages,
            eps_low=s.clip_eps, eps_high=s.clip_eps)
        loss = token_mean(with_kl(per_token, tb, s.kl_coef), tb.mask, tokens=tb.step.tokens)
        return loss, {"clip_fraction": clip_fraction(clipped, tb), **metrics(tb)}
    return raft_plus_plus_objective


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    examples = [rollout_example(r, float(r.correct)) for r in inputs.rollouts]
    return TrainingPlan(examples, objective(s), old=True,
                        reference=s.reference if s.kl_coef else None,
                        stats={"zero_variance_share": zero_variance_share_of(inputs.rollouts),
                               "accepted": sum(r.correct for r in inputs.rollouts)})


RECIPE = Recipe("raft++", Settings, plan)

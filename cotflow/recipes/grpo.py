"""grpo: the GRPO family — GRPO, Dr.GRPO, DAPO and SEED-GRPO are settings of this recipe
(params.yaml `algorithms` entries grpo, dr-grpo, dapo, seed-grpo).

How an iteration trains, in order:
1. Reward per rollout: 1 if correct (the verify reward), else `reward_incorrect` (DAPO: −1);
   plus DAPO's soft overlong penalty when `overlong_cache` > 0, L_max = sample.max_new_tokens
   (specs/algorithms-b.md §1.4).
2. Group filter (`drop_uniform_groups`, DAPO's dynamic sampling): keep the prompts whose
   rollouts are neither all correct nor all incorrect. The filter is on *accuracy*, as
   verl's `filter_groups` metric `acc` and as the sample stage's refill rounds count mixed
   groups — not on the shaped reward: an all-correct group with one overlong reply is
   dropped, where std normalisation would turn its length penalty into full-size
   advantages (e.g. [+0.354 ×7, −2.475]).
3. Group advantages (r − mean) / (std + eps), or r − mean for Dr.GRPO (`advantage_std`),
   GRPO arXiv 2402.03300, Dr.GRPO arXiv 2503.20783 (§1.2-1.3).
4. SEED-GRPO (`semantic_entropy`): each group's advantages × f(α·SE / log G), SE the
   semantic entropy of its answers clustered by the verifier's equivalence
   (arXiv 2505.12346; specs/algorithms-a.md §2.2). Cluster masses weighted by the
   stage-start policy's likelihoods when `weighting` is not "frequency".
5. Objective: PPO clipped surrogate against the stage-start policy (ε_low, ε_high: DAPO's
   clip-higher; optional dual clip), + kl_coef · k3 KL to the reference, reduced by
   `loss_agg` over the whole optimizer step (§1.5; Dr.GRPO's L_const defaults to
   sample.max_new_tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Literal

from pydantic import Field

from cotflow.config_types import ClipEps, NonNegFloat, NonNegInt, PosFloat, Section
from cotflow.recipes.base import Example, Inputs, Recipe, TrainingPlan, rollout_example
from cotflow.rollouts import (
    Rollout,
    answer_pairs,
    equivalence_from,
    mixed_prompts,
    zero_variance_share_of,
)


class SemanticEntropySettings(Section):
    """SEED-GRPO's advantage scaling (specs/algorithms-a.md §2.2)."""

    alpha: NonNegFloat
    estimator: Literal["rao", "mc"]
    weighting: Literal["frequency", "seq_prob", "mean_token_prob"]
    f: Literal["reciprocal", "linear"]


class Settings(Section):
    kind: Literal["grpo"]
    advantage_std: Literal["sample", "population", "none"]
    std_eps: NonNegFloat
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                      "seq-mean-token-sum-norm"]
    loss_constant: PosFloat | None  # L_const of seq-mean-token-sum-norm; null: max_new_tokens
    eps_low: ClipEps
    eps_high: PosFloat
    dual_clip: Annotated[float, Field(gt=1)] | None
    kl_coef: NonNegFloat
    reference: Literal["prev", "base"]  # the KL reference policy
    reward_incorrect: float  # a correct rollout earns 1; DAPO gives -1 to the rest
    overlong_cache: NonNegInt  # DAPO soft overlong penalty window in tokens; 0: off
    drop_uniform_groups: bool  # DAPO: drop all-correct and all-incorrect groups
    semantic_entropy: SemanticEntropySettings | None


def shaped_rewards(rows: Sequence[Rollout], *, reward_incorrect: float, overlong_cache: int,
                   max_new_tokens: int) -> list[float]:
    """Step 1: correctness reward plus DAPO's overlong penalty."""
    from cotflow.algorithms.dapo import overlong_penalty

    out = []
    for r in rows:
        value = 1.0 if r.correct else reward_incorrect
        if overlong_cache:
            value += overlong_penalty(r.num_tokens, max_len=max_new_tokens,
                                      cache_len=overlong_cache)
        out.append(value)
    return out


def group_examples(rows: Sequence[Rollout], rewards: Sequence[float], *, std: str, eps: float,
                   drop_uniform: bool, scales: dict[str, float] | None = None,
                   ) -> tuple[list[Example], dict[str, float]]:
    """Steps 2-4: filter groups on accuracy, group advantages, per-prompt scales."""
    from cotflow.algorithms.advantages import grouped_advantages, zero_variance_share

    ids = [r.prompt_id for r in rows]
    stats = {"zero_variance_share": zero_variance_share_of(rows),
             "shaped_zero_variance_share": zero_variance_share(rewards, ids) if rows else 0.0,
             "mean_shaped_reward": sum(rewards) / max(len(rewards), 1)}
    keep = mixed_prompts(rows) if drop_uniform else set(ids)
    kept = [(r, x) for r, x in zip(rows, rewards, strict=True) if r.prompt_id in keep]
    advantages = grouped_advantages([x for _, x in kept], [r.prompt_id for r, _ in kept],
                                    std=std, eps=eps)
    scales = scales or {}
    out = [rollout_example(r, a * scales.get(r.prompt_id, 1.0))
           for (r, _), a in zip(kept, advantages, strict=True)]
    stats["groups_kept"] = len({r.prompt_id for r, _ in kept})
    stats["mean_abs_advantage"] = sum(abs(e.advantage) for e in out) / max(len(out), 1)
    return out, stats


def semantic_entropy_scales(
    rows: Sequence[Rollout], equivalent: Callable[[str, str], bool], *, alpha: float,
    estimator: str, weighting: str, f: str, logliks: Sequence[float] | None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Step 4: per prompt, SEED-GRPO's advantage scale from the semantic entropy of its
    answers. `logliks` are per-rollout log-likelihoods under the sampling policy (summed,
    or per-token means, to match `weighting`), needed unless weighting is "frequency"."""
    from cotflow.algorithms.advantages import group_indices
    from cotflow.algorithms.seed import (
        cluster_answers,
        cluster_probabilities,
        seed_scale,
        semantic_entropy,
    )

    scales: dict[str, float] = {}
    entropies = []
    for pid, idx in group_indices([r.prompt_id for r in rows]).items():
        ids = cluster_answers([rows[i].extracted for i in idx], equivalent)
        probs = cluster_probabilities(
            ids, weighting=weighting,
            logliks=None if logliks is None else [logliks[i] for i in idx])
        se = semantic_entropy(probs, estimator=estimator)
        entropies.append(se)
        scales[str(pid)] = seed_scale(se, len(idx), alpha=alpha, f=f)
    return scales, {"semantic_entropy": sum(entropies) / max(len(entropies), 1),
                    "mean_seed_scale": sum(scales.values()) / max(len(scales), 1)}


def _seed_scales(s: Settings, inputs: Inputs) -> tuple[dict[str, float], dict[str, float]]:
    se = s.semantic_entropy
    assert se is not None
    rows = inputs.rollouts
    pairs = answer_pairs(rows)
    equivalent = equivalence_from(inputs.services.equivalent(pairs))
    logliks = None
    if se.weighting != "frequency":
        # Completion tokens only: the prompt's likelihood is the same for the whole group.
        lps = inputs.services.completion_logprobs(rows)
        sums = [float(lp.sum()) for lp in lps]
        logliks = (sums if se.weighting == "seq_prob"
                   else [x / max(len(lp), 1) for x, lp in zip(sums, lps, strict=True)])
    return semantic_entropy_scales(rows, equivalent, alpha=se.alpha, estimator=se.estimator,
                                   weighting=se.weighting, f=se.f, logliks=logliks)


def objective(s: Settings, loss_constant: float):
    """Step 5."""
    from cotflow.algorithms.losses import aggregate, clipped_surrogate_tokens
    from cotflow.recipes.terms import clip_fraction, metrics, need, with_kl

    def grpo_objective(tb):
        per_token, clipped = clipped_surrogate_tokens(
            tb.logprobs, need(tb.old_logprobs, "old"), tb.advantages,
            eps_low=s.eps_low, eps_high=s.eps_high, dual_clip=s.dual_clip)
        loss = aggregate(with_kl(per_token, tb, s.kl_coef), tb.mask, s.loss_agg,
                         constant=loss_constant, tokens=tb.step.tokens,
                         sequences=tb.step.sequences)
        return loss, {"clip_fraction": clip_fraction(clipped, tb), **metrics(tb)}
    return grpo_objective


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    return plan_on(s, inputs, shaped_rewards(inputs.rollouts, reward_incorrect=s.reward_incorrect,
                                             overlong_cache=s.overlong_cache,
                                             max_new_tokens=inputs.max_new_tokens))


def plan_on(s: Settings, inputs: Inputs, rewards: Sequence[float]) -> TrainingPlan:
    """Steps 2-5 on per-rollout `rewards`: what a recipe with rewards of its own (ton)
    shares with grpo."""
    rows = inputs.rollouts
    scales, se_stats = _seed_scales(s, inputs) if s.semantic_entropy else (None, {})
    examples, stats = group_examples(rows, rewards, std=s.advantage_std, eps=s.std_eps,
                                     drop_uniform=s.drop_uniform_groups, scales=scales)
    return TrainingPlan(examples, objective(s, s.loss_constant or float(inputs.max_new_tokens)),
                        old=True, reference=s.reference if s.kl_coef else None,
                        stats={**stats, **se_stats})


RECIPE = Recipe("grpo", Settings, plan)

"""critique-grpo: GRPO over groups that mix on-policy responses with a critique-guided
refinement (Zhang et al., arXiv 2506.03106; specs/algorithms-a.md §3).

How an iteration trains, in order:
1. Groups (§3.3): the critique stage selected one refinement per prompt (its first correct
   one, else its first); the train stage joined it to `Inputs.rollouts` as a member of the
   prompt's group (cotflow/rollouts.py selected_refinements). It takes the group's first
   `n_prefix` slots in sample order: n = 8 gives 7 initial responses + 1 refinement. The
   paper's code defaults to n_prefix = −1, which fills every slot with copies of the
   refinement (all advantages 0, §3.10): we require n_prefix ≥ 1 and below the group size.
   The refinement trains as a reply to the original question, not its refinement prompt,
   with its tokens as sampled (the paper's code appends an EOS to every refinement; here an
   unfinished one trains without the EOS it never produced, as every rollout does).
2. Rewards 1 (correct) / 0; advantages (r − mean) / (std + eps) over the mixed group. The
   released script asks for no std, but its trainer reads another flag and divides anyway
   (§3.4); here `advantage_std` is the one switch, and `none` really drops the std.
3. Objective (§3.5): initial tokens −A·ρ (no clip unless eps_low/eps_high are set);
   refinement tokens −A·f(π_θ), f(p) = p/(p+γ), no behaviour-policy denominator; reduced
   by `loss_agg` (the paper: Σ/L, L the response budget, `seq-mean-token-sum-norm` with
   L = sample.max_new_tokens: we also divide by the step's sequences, as verl 0.9.1 does,
   so the micro-batch split changes nothing; the paper's micro/mini scaling makes its
   value b_micro × this, a constant the learning rate absorbs); minus entropy_coef × the
   token-mean entropy (the paper: 0.001), plus an optional k3 KL (the paper: none).
"""

from __future__ import annotations

from typing import Literal

from cotflow.config_types import ClipEps, NonNegFloat, PosFloat, PosInt, Section
from cotflow.recipes.base import Example, Inputs, Recipe, TrainingPlan, rollout_example
from cotflow.rollouts import Rollout, groups


class Settings(Section):
    kind: Literal["critique-grpo"]
    critique: Literal["indicative", "indicative_gt", "cot", "self"]  # cotflow/critiques.py
    n_prefix: PosInt  # group slots the selected refinement takes (the paper code's -1: all)
    shaping_gamma: PosFloat  # γ of f(p) = p / (p + γ)
    advantage_std: Literal["sample", "population", "none"]
    std_eps: NonNegFloat
    eps_low: ClipEps | None  # null (both): no clip of the on-policy ratio, as the paper
    eps_high: PosFloat | None
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                      "seq-mean-token-sum-norm"]
    loss_constant: PosFloat | None  # L of Σ/L; null: sample.max_new_tokens
    entropy_coef: NonNegFloat  # entropy bonus
    kl_coef: NonNegFloat
    reference: Literal["prev", "base"]


def mixed_groups(rows: list[Rollout], n_prefix: int) -> list[list[Rollout]]:
    """Step 1: each prompt's initial responses in sample order, the first `n_prefix`
    replaced by its selected refinement (when it has one)."""
    out = []
    for pid, group in groups(rows).items():
        initial = sorted((r for r in group if not r.refinement), key=lambda r: r.sample_idx)
        refined = [r for r in group if r.refinement]
        if len(refined) > 1:
            raise ValueError(f"prompt {pid!r} has {len(refined)} selected refinements, "
                             "expected one (rerun critique)")
        if refined:
            if n_prefix >= len(initial):
                raise ValueError(f"n_prefix {n_prefix} leaves no on-policy response in the "
                                 f"group of {len(initial)} of prompt {pid!r}")
            initial = refined * n_prefix + initial[n_prefix:]
        out.append(initial)
    return out


def group_examples(members: list[list[Rollout]], *, std: str, eps: float
                   ) -> tuple[list[Example], dict[str, float]]:
    """Step 2: advantages over each mixed group; the refinement flagged off-policy."""
    from cotflow.algorithms.advantages import grouped_advantages

    flat = [r for g in members for r in g]
    rewards = [1.0 if r.correct else 0.0 for r in flat]
    advantages = grouped_advantages(rewards, [r.prompt_id for r in flat], std=std, eps=eps)
    examples = [rollout_example(r, a, off_policy=float(r.refinement))
                for r, a in zip(flat, advantages, strict=True)]
    uniform = sum(len({r.correct for r in g}) == 1 for g in members)
    return examples, {
        "zero_variance_share": uniform / max(len(members), 1),
        "refinements_trained": sum(r.refinement for r in flat),
        "mean_abs_advantage": sum(abs(a) for a in advantages) / max(len(advantages), 1)}


def objective(s: Settings, loss_constant: float):
    """Step 3."""
    from cotflow.algorithms.critique import critique_grpo_token_loss
    from cotflow.algorithms.losses import aggregate, entropy_from_logits, token_mean
    from cotflow.recipes.terms import metrics, need, with_kl

    def critique_grpo_objective(tb):
        per_token = critique_grpo_token_loss(
            tb.logprobs, need(tb.old_logprobs, "old"), tb.advantages, tb.extras["off_policy"],
            gamma=s.shaping_gamma, eps_low=s.eps_low, eps_high=s.eps_high)
        loss = aggregate(with_kl(per_token, tb, s.kl_coef), tb.mask, s.loss_agg,
                         constant=loss_constant, tokens=tb.step.tokens,
                         sequences=tb.step.sequences)
        if s.entropy_coef:
            # The step's token-mean entropy, summed over its micro-batches.
            loss = loss - s.entropy_coef * token_mean(entropy_from_logits(tb.logits), tb.mask,
                                                      tokens=tb.step.tokens)
        return loss, metrics(tb)
    return critique_grpo_objective


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    if (s.eps_low is None) != (s.eps_high is None):
        raise ValueError("critique-grpo: set both eps_low and eps_high (a clip) or neither")
    members = mixed_groups(inputs.rollouts, s.n_prefix)
    examples, stats = group_examples(members, std=s.advantage_std, eps=s.std_eps)
    return TrainingPlan(examples, objective(s, s.loss_constant or float(inputs.max_new_tokens)),
                        old=True, reference=s.reference if s.kl_coef else None, stats=stats)


RECIPE = Recipe("critique-grpo", Settings, plan)

"""Critique-GRPO's pure math: refinement selection and the on/off-policy token loss.

Zhang et al., "Critique-GRPO: Advancing LLM Reasoning with Natural Language and Numerical
Feedback", arXiv 2506.03106; exact rules from the authors' code (specs/algorithms-a.md §3.3,
§3.5, worked numbers §3.9).

Shapes: B sequences, T positions; `off_policy` is (B,), 1 for a refinement, 0 for an
initial (on-policy) response.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

GAMMA = 0.1  # the paper's shaping constant γ


def select_refinement(correct: Sequence[bool]) -> int:
    """§3.3: of one prompt's refinements (in sample order), the first correct one, else the
    first. Returns its position."""
    if not correct:
        raise ValueError("select_refinement needs at least one refinement")
    return next((i for i, ok in enumerate(correct) if ok), 0)


def shaping(p: torch.Tensor, gamma: float = GAMMA) -> torch.Tensor:
    """Policy shaping f(p) = p / (p + γ) (§3.5): its slope in log p, γp/(p+γ)², peaks at
    p = γ, so correct refinements push hardest on tokens the policy finds unlikely."""
    if not gamma > 0:
        raise ValueError(f"shaping gamma={gamma} must be > 0")
    return p / (p + gamma)


def critique_grpo_token_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
    off_policy: torch.Tensor, *, gamma: float = GAMMA, eps_low: float | None = None,
    eps_high: float | None = None,
) -> torch.Tensor:
    """Per-token loss of §3.5, (B, T), unmasked:

        initial responses:  ℓ_t = −A · ρ_t,  ρ_t = π_θ / π_old  (the paper: no clip);
                            with eps_low/eps_high set, PPO's clipped surrogate instead
        refinements:        ℓ_t = −A · f(π_θ(y_t)),  f(p) = p / (p + γ),
                            no behaviour-policy denominator (the refinement was drawn
                            from π(· | refinement prompt), trained as a reply to q alone)

    Args:
        logprobs, old_logprobs: (B, T). advantages: (B,) or (B, T). off_policy: (B,).
    """
    from cotflow.algorithms.losses import clipped_surrogate_tokens

    if (eps_low is None) != (eps_high is None):
        raise ValueError("set both eps_low and eps_high (a clip) or neither (no clip)")
    if off_policy.dim() != 1 or off_policy.shape[0] != logprobs.shape[0]:
        raise ValueError(f"off_policy must be ({logprobs.shape[0]},), got "
                         f"{tuple(off_policy.shape)}")
    adv = advantages.unsqueeze(-1).expand_as(logprobs) if advantages.dim() == 1 else advantages
    if eps_low is None:
        on = -adv * torch.exp(logprobs - old_logprobs)
    else:
        on, _ = clipped_surrogate_tokens(logprobs, old_logprobs, adv, eps_low=eps_low,
                                         eps_high=eps_high)
    off = -adv * shaping(torch.exp(logprobs), gamma)
    # where, not a blend: each token's gradient comes from its own term only.
    return torch.where(off_policy.bool().unsqueeze(-1).expand_as(logprobs), off, on)

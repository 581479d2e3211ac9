"""NFT — Negative-aware Fine-Tuning (pure torch).

Chen et al., "Bridging Supervised Learning and Reinforcement Learning in Math Reasoning",
arXiv 2505.18116 (code: NVlabs/NFT). Token-level loss exactly as specs/algorithms-a.md §4.2:

    R_t     = exp(min(log π_θ(a_t) - log π_old(a_t), ratio_cap))
    proxy_t = (1 - r̂·R_t) / (1 - r̂)                  (π⁻_θ / π⁻_old of the implicit negative policy)
    pos_t   = -log clamp_ste(R_t, clamp_positive)
    neg_t   = -log clamp_ste(proxy_t, clamp_negative)
    ℓ_t     = ω(r̂) · [c·pos_t + (1 - c)·neg_weight·neg_t]

r̂ is the group's fraction correct, clamped to [0.02, 0.98]; c is 1 for a correct response.
At R = 1 the gradient is GRPO's: ω = 1 - r̂ gives Dr.GRPO's advantage c - r̂, ω =
√((1-r̂)/r̂) GRPO's with the population std (§4.3).
"""

from __future__ import annotations

from typing import Literal, overload

import torch

from cotflow.algorithms._checks import check_choice
from cotflow.algorithms.losses import apply_mask

R_HAT_MIN, R_HAT_MAX = 0.02, 0.98
NORMALIZE_MODES = (0, 1, 2)


def clamp_ste(x: torch.Tensor, min_value: float) -> torch.Tensor:
    """Forward max(x, min_value); backward passes the gradient of x straight through (NFT,
    arXiv 2505.18116). Any shape.

    Not a clip: where x < min_value the value is replaced but ∂/∂x stays 1.
    """
    return x + (x.clamp(min=min_value) - x).detach()


@overload
def r_hat_of(correct_fraction: float) -> float: ...
@overload
def r_hat_of(correct_fraction: torch.Tensor) -> torch.Tensor: ...
def r_hat_of(correct_fraction: float | torch.Tensor) -> float | torch.Tensor:
    """r̂ = fraction of the group correct, clamped to [0.02, 0.98] (float or tensor of any shape;
    NFT, arXiv 2505.18116).

    Raises ValueError if any fraction is <= 0 or >= 1: the implicit negative policy divides
    by 1 - r̂ and a group with no positive (or no negative) sample has no NFT signal. The
    reference code asserts this after DAPO's dynamic sampling; filter such groups first
    (`cotflow.rollouts.mixed_prompts`, as the nft recipe does).
    """
    frac = torch.as_tensor(correct_fraction, dtype=torch.float64)
    bad = ~((frac > 0) & (frac < 1))
    if bool(bad.any()):
        raise ValueError(
            f"NFT needs 0 < fraction correct < 1 for every group, got {frac[bad].tolist()[:5]}; "
            "drop all-correct and all-wrong groups before the loss (dynamic sampling)")
    if isinstance(correct_fraction, torch.Tensor):
        return correct_fraction.clamp(R_HAT_MIN, R_HAT_MAX)
    return min(max(float(correct_fraction), R_HAT_MIN), R_HAT_MAX)


def prompt_weight(r_hat: torch.Tensor, normalize: Literal[0, 1, 2]) -> torch.Tensor:
    """Per-prompt weight ω(r̂) of NFT (arXiv 2505.18116), same shape as r_hat.

    0 -> 1; 1 -> 1 - r̂ (Dr.GRPO-matching, the paper's default); 2 -> √((1 - r̂)/r̂)
    (GRPO-with-population-std-matching)."""
    check_choice("normalize", normalize, NORMALIZE_MODES)
    if normalize == 0:
        return torch.ones_like(r_hat)
    if normalize == 1:
        return 1.0 - r_hat
    return ((1.0 - r_hat) / r_hat).sqrt()


def nft_token_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, correct: torch.Tensor,
    r_hat: torch.Tensor, *, normalize: Literal[0, 1, 2], neg_weight: float,
    clamp_positive: float, clamp_negative: float, ratio_cap: float = 10.0,
) -> torch.Tensor:
    """Per-token NFT loss ℓ_t (arXiv 2505.18116, spec §4.2; unmasked, reduce with `nft_reduce`).

    Args:
        logprobs: (B, T) log π_θ of the taken tokens. old_logprobs: (B, T) under π_old.
        correct: (B,) 1 for a correct response, 0 otherwise (bool or float).
        r_hat: (B,) fraction correct of each response's group; must lie in (0, 1) and is
            clamped to [0.02, 0.98] here (`r_hat_of`), so raw fractions may be passed.
        normalize: ω mode, see `prompt_weight`. neg_weight: λ_neg (1 = NFT, 0 = RFT:
            positives only). clamp_positive: ε⁺ (reference 0). clamp_negative: ε⁻ > 0
            (reference 1.0). ratio_cap: cap on the log-ratio before exp (reference 10; no
            gradient above it).
    Returns:
        (B, T) ℓ_t.
    """
    check_choice("normalize", normalize, NORMALIZE_MODES)
    if neg_weight < 0:
        # The reference code reuses neg_weight < 0 to switch to its DAPO baseline.
        raise ValueError(f"neg_weight={neg_weight} must be >= 0 (use the dapo algorithm for DAPO)")
    if clamp_positive < 0 or not clamp_negative > 0:
        raise ValueError(f"need clamp_positive >= 0 and clamp_negative > 0, got "
                         f"{clamp_positive} and {clamp_negative}")
    if logprobs.dim() != 2 or logprobs.shape != old_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and old_logprobs "
                         f"{tuple(old_logprobs.shape)} must be the same (B, T) shape")
    batch = logprobs.shape[0]
    if correct.shape != (batch,) or r_hat.shape != (batch,):
        raise ValueError(f"correct {tuple(correct.shape)} and r_hat {tuple(r_hat.shape)} must be "
                         f"({batch},)")
    c = correct.to(logprobs.dtype)
    if bool(((c != 0) & (c != 1)).any()):
        raise ValueError(f"correct must hold only 0 and 1, got {correct.tolist()[:8]}")
    r = r_hat_of(r_hat.to(logprobs.dtype)).unsqueeze(-1)
    c = c.unsqueeze(-1)
    ratio = torch.exp((logprobs - old_logprobs).clamp(max=ratio_cap))
    proxy = (1.0 - r * ratio) / (1.0 - r)
    pos = -torch.log(clamp_ste(ratio, clamp_positive))
    neg = -torch.log(clamp_ste(proxy, clamp_negative))
    return prompt_weight(r, normalize) * (c * pos + (1.0 - c) * neg_weight * neg)


def nft_reduce(
    per_token: torch.Tensor, mask: torch.Tensor, *, normalizer: float = 1000.0,
) -> torch.Tensor:
    """NFT's reference reduction (arXiv 2505.18116): Σ over sequences and masked tokens / 1000.

    No division by batch size or token count (spec §4.2 "reduction quirk"); gradient-norm
    clipping bounds the step. per_token, mask: (B, T) -> scalar.
    """
    if not normalizer > 0:
        raise ValueError(f"normalizer={normalizer} must be > 0")
    return apply_mask(per_token, mask).sum() / normalizer

"""Per-micro-batch training objectives of each iteration type, built from the pure losses.

An objective maps a `TokenBatch` (the policy's log-probs and logits plus what the stage
computed before training) to a scalar loss and metrics. Shapes: B sequences, T positions;
`mask` is 1 on response tokens.

Gradient accumulation averages the objectives of the micro-batches of one optimizer step,
so "token-mean" is a mean within each micro-batch, as in verl.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from cotflow.algorithms.losses import (
    aggregate,
    clipped_surrogate_tokens,
    entropy_from_logits,
    k3_kl,
    raft_loss,
    token_mean,
)
from cotflow.algorithms.nft import nft_reduce, nft_token_loss


@dataclass
class TokenBatch:
    logprobs: torch.Tensor  # (B, T) under the policy being trained
    logits: torch.Tensor  # (B, T, V)
    mask: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B,)
    old_logprobs: torch.Tensor | None = None  # (B, T) the policy at the stage's start
    ref_logprobs: torch.Tensor | None = None  # (B, T) the KL reference policy
    correct: torch.Tensor | None = None  # (B,) 1.0 / 0.0 (NFT)
    r_hat: torch.Tensor | None = None  # (B,) the prompt's clamped accuracy (NFT)


Objective = Callable[[TokenBatch], tuple[torch.Tensor, dict[str, float]]]


def _metrics(tb: TokenBatch) -> dict[str, float]:
    """Entropy and KL to the reference (or the stage-start policy), as token-means."""
    with torch.no_grad():
        out = {"entropy": float(token_mean(entropy_from_logits(tb.logits), tb.mask))}
        against = tb.ref_logprobs if tb.ref_logprobs is not None else tb.old_logprobs
        if against is not None:
            out["kl"] = float(token_mean(k3_kl(tb.logprobs, against), tb.mask))
    return out


def raft(tb: TokenBatch) -> tuple[torch.Tensor, dict[str, float]]:
    """RAFT: SFT on accepted samples (their advantage is 1)."""
    return raft_loss(tb.logprobs, tb.advantages, tb.mask), _metrics(tb)


def raft_plus_plus(clip_eps: float) -> Objective:
    """RAFT++: the token-mean clipped surrogate with A = 1 on accepted samples."""
    def objective(tb: TokenBatch) -> tuple[torch.Tensor, dict[str, float]]:
        per_token, clipped = clipped_surrogate_tokens(
            tb.logprobs, _need(tb.old_logprobs, "old"), tb.advantages,
            eps_low=clip_eps, eps_high=clip_eps)
        return token_mean(per_token, tb.mask), {
            "clip_fraction": float(token_mean(clipped.to(tb.logprobs.dtype), tb.mask)),
            **_metrics(tb)}
    return objective


def grpo(*, eps_low: float, eps_high: float, dual_clip: float | None, loss_agg: str,
         loss_constant: float | None, kl_coef: float) -> Objective:
    """GRPO family (specs/algorithms-b.md §1.2-1.5): clipped surrogate on the group
    advantages, aggregated by `loss_agg`, plus kl_coef · k3 KL to the reference."""
    def objective(tb: TokenBatch) -> tuple[torch.Tensor, dict[str, float]]:
        per_token, clipped = clipped_surrogate_tokens(
            tb.logprobs, _need(tb.old_logprobs, "old"), tb.advantages,
            eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip)
        if kl_coef:
            per_token = per_token + kl_coef * k3_kl(tb.logprobs, _need(tb.ref_logprobs, "ref"))
        loss = aggregate(per_token, tb.mask, loss_agg, constant=loss_constant)
        return loss, {"clip_fraction": float(token_mean(clipped.to(tb.logprobs.dtype), tb.mask)),
                      **_metrics(tb)}
    return objective


def nft(*, normalize: int, neg_weight: float, clamp_positive: float, clamp_negative: float,
        ratio_cap: float, normalizer: float) -> Objective:
    """NFT (specs/algorithms-a.md §4.2): likelihood of positives under the policy, of
    negatives under the implicit negative policy; token losses summed / normalizer."""
    def objective(tb: TokenBatch) -> tuple[torch.Tensor, dict[str, float]]:
        per_token = nft_token_loss(
            tb.logprobs, _need(tb.old_logprobs, "old"), _need(tb.correct, "correct"),
            _need(tb.r_hat, "r_hat"), normalize=normalize, neg_weight=neg_weight,
            clamp_positive=clamp_positive, clamp_negative=clamp_negative, ratio_cap=ratio_cap)
        return nft_reduce(per_token, tb.mask, normalizer=normalizer), _metrics(tb)
    return objective


def _need(value: torch.Tensor | None, name: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"this objective needs {name} values the trainer did not compute")
    return value

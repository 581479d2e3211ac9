"""Pieces the recipes' objectives share: metrics every iteration logs, and the k3 KL term.
Torch; imported by the recipes' objectives when they are built, not by the config."""

from __future__ import annotations

import torch

from cotflow.algorithms.losses import entropy_from_logits, k3_kl, token_mean
from cotflow.recipes.base import TokenBatch


def need(value: torch.Tensor | None, name: str) -> torch.Tensor:
    if value is None:
        raise ValueError(f"this objective needs {name} values the trainer did not compute")
    return value


def metrics(tb: TokenBatch) -> dict[str, float]:
    """Entropy and KL to the reference (else the stage-start policy), as micro-batch
    token-means: what every iteration reports (specs/algorithms-b.md §6)."""
    with torch.no_grad():
        out = {"entropy": float(token_mean(entropy_from_logits(tb.logits), tb.mask))}
        against = tb.ref_logprobs if tb.ref_logprobs is not None else tb.old_logprobs
        if against is not None:
            out["kl"] = float(token_mean(k3_kl(tb.logprobs, against), tb.mask))
    return out


def clip_fraction(clipped: torch.Tensor, tb: TokenBatch) -> float:
    return float(token_mean(clipped.to(tb.logprobs.dtype), tb.mask))


def with_kl(per_token: torch.Tensor, tb: TokenBatch, kl_coef: float) -> torch.Tensor:
    """per-token loss + kl_coef · k3(π_θ ‖ π_ref), the KL as a loss term (GRPO, verl's
    use_kl_loss; RAFT++ and GVM at 0.001)."""
    if not kl_coef:
        return per_token
    return per_token + kl_coef * k3_kl(tb.logprobs, need(tb.ref_logprobs, "reference"))

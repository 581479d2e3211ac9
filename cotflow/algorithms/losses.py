"""Policy losses over token log-probabilities (pure torch).

Shapes: B sequences, T token positions; `mask` is 1 on response tokens, 0 on prompt and
padding. `advantages` is (B,) — one value for every token of a sequence — or (B, T).

RAFT / RAFT++: Xiong et al., "A Minimalist Approach to LLM Reasoning", arXiv 2504.11343.
Both aggregate by token-mean over every masked token of the mini-batch, including tokens
of sequences whose advantage is 0 (specs/algorithms-b.md §5.2, §5.6).
"""

from __future__ import annotations

import torch


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position: logits (B, T, V), targets (B, T) -> (B, T)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of values over masked tokens / number of masked tokens (0 if none)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return advantages.unsqueeze(-1).expand_as(like) if advantages.dim() == 1 else advantages


def raft_loss(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RAFT: -Σ m·A·log π / Σ m with A = 1[correct]; SFT when every A is 1.

    Args:
        logprobs: (B, T) log π_θ of the taken tokens.
        advantages: (B,) or (B, T).
        mask: (B, T) response mask.
    """
    return token_mean(-_per_token(advantages, logprobs) * logprobs, mask)


def clipped_surrogate(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
    mask: torch.Tensor, *, eps_low: float, eps_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate, token-mean: max(-A·ρ, -A·clip(ρ, 1-ε_low, 1+ε_high)).

    RAFT++ is this with A = 1[correct] and ε_low = ε_high = 0.2.
    Returns:
        (loss, clip_fraction): scalars; clip_fraction is the share of masked tokens
        whose clipped term was the one taken.
    """
    adv = _per_token(advantages, logprobs)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = token_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = token_mean((clipped > unclipped).to(logprobs.dtype), mask)
    return loss, clip_fraction.detach()

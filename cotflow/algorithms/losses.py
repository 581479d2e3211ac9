"""Policy losses over token log-probabilities (pure torch).

Shapes: B sequences, T token positions; `mask` is 1 on response tokens, 0 on prompt and
padding. `advantages` is (B,) — one value for every token of a sequence — or (B, T).

- RAFT / RAFT++: Xiong et al., "A Minimalist Approach to LLM Reasoning", arXiv 2504.11343.
  Both aggregate by token-mean over every masked token of the mini-batch, including tokens
  of sequences whose advantage is 0 (specs/algorithms-b.md §5.2, §5.6).
- PPO clipped surrogate: Schulman et al., arXiv 1707.06347; clip-higher from DAPO,
  arXiv 2503.14476; dual clip from Ye et al., arXiv 1912.09729 (as in verl).
- GRPO (k3 KL, seq-mean-token-mean): arXiv 2402.03300; Dr.GRPO aggregation: arXiv 2503.20783.
Aggregation modes: specs/algorithms-b.md §1.5.
"""

from __future__ import annotations

from typing import Literal

import torch

from cotflow.algorithms._checks import check_choice

AggMode = Literal[
    "token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position: logits (B, T, V), targets (B, T) -> (B, T)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def apply_mask(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """values where mask is set, 0 elsewhere (same shape)."""
    # where, not multiply: a padded position may hold inf/nan (e.g. log 0), and 0 * inf = nan.
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype))


def token_mean(values: torch.Tensor, mask: torch.Tensor, *,
               tokens: float | None = None) -> torch.Tensor:
    """Sum of values over masked tokens / number of masked tokens (0 if none).

    `tokens` replaces the count by the masked tokens of the whole optimizer step, when this
    (B, T) is one micro-batch of it: summed over micro-batches, the result is the step's
    token-mean however the step was split (verl's global token count)."""
    count = mask.to(values.dtype).sum() if tokens is None else torch.tensor(float(tokens))
    return apply_mask(values, mask).sum() / count.clamp(min=1.0)


def aggregate(
    values: torch.Tensor, mask: torch.Tensor, mode: AggMode, *, constant: float | None = None,
    tokens: float | None = None, sequences: float | None = None,
) -> torch.Tensor:
    """Reduce per-token losses (B, T) under the response mask (B, T) to a scalar.

    GRPO arXiv 2402.03300, DAPO arXiv 2503.14476, Dr.GRPO arXiv 2503.20783 (spec §1.5):

    | mode | formula |
    | token-mean | Σ_i Σ_t m L / Σ_i Σ_t m (DAPO, verl default, RAFT++) |
    | seq-mean-token-mean | (1/B) Σ_i (Σ_t m L) / (Σ_t m) (GRPO, TRL) |
    | seq-mean-token-sum | (1/B) Σ_i Σ_t m L |
    | seq-mean-token-sum-norm | (1/B) Σ_i (Σ_t m L) / constant (Dr.GRPO, oat form) |

    "seq-mean-token-sum-norm" needs `constant` (L_const, the generation budget). Older verl
    computed Σ_i Σ_t m L / (padded width), without 1/B; verl 0.9.1 divides by B too, which
    equals this value for a constant equal to the padded width (spec §1.3, corrected).
    `constant` is ignored by the other modes.

    Empty rows (no response token) count in B for the seq-mean modes and contribute 0, as
    the formulas say; an all-empty mask gives 0 for token-mean. B = 0 gives 0.

    When (B, T) is one micro-batch of an optimizer step, `tokens` and `sequences` are the
    step's masked tokens and sequences (over every micro-batch and rank): they replace
    Σ_i Σ_t m and B, so the micro-batch results sum to the step's value.
    """
    check_choice("mode", mode, AGG_MODES)
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} must be the "
                         "same (B, T) shape")
    if mode == "token-mean":
        return token_mean(values, mask, tokens=tokens)
    row_sums = apply_mask(values, mask).sum(dim=-1)
    if mode == "seq-mean-token-mean":
        row_sums = row_sums / mask.to(values.dtype).sum(dim=-1).clamp(min=1.0)
    elif mode == "seq-mean-token-sum-norm":
        if constant is None or not constant > 0:
            raise ValueError(f"mode 'seq-mean-token-sum-norm' needs constant > 0, got {constant}")
        row_sums = row_sums / constant
    return row_sums.sum() / max(values.shape[0] if sequences is None else sequences, 1)


def _per_token(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return advantages.unsqueeze(-1).expand_as(like) if advantages.dim() == 1 else advantages


def raft_loss(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              tokens: float | None = None) -> torch.Tensor:
    """RAFT: -Σ m·A·log π / Σ m with A = 1[correct]; SFT when every A is 1.

    Args:
        logprobs: (B, T) log π_θ of the taken tokens.
        advantages: (B,) or (B, T).
        mask: (B, T) response mask.
        tokens: the optimizer step's masked tokens, if (B, T) is one micro-batch of it.
    """
    return token_mean(-_per_token(advantages, logprobs) * logprobs, mask, tokens=tokens)


def clipped_surrogate_tokens(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, *,
    eps_low: float, eps_high: float, dual_clip: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO clipped surrogate loss (arXiv 1707.06347; clip-higher arXiv 2503.14476;
    dual clip arXiv 1912.09729), ρ = exp(logprobs - old_logprobs):

        L = max(-A·ρ, -A·clip(ρ, 1-ε_low, 1+ε_high));  with dual_clip = c > 1 and A < 0,
        L = min(L, -A·c)  (verl's dual clip: bounds the loss of a negative-advantage token
        whose ratio has run far above 1).

    Args:
        logprobs, old_logprobs: (B, T). advantages: (B,) or (B, T).
    Returns:
        (loss, clipped): both (B, T). `clipped` is a bool tensor, True where a clipped term
        was the one taken (the PPO clip, or the dual clip); unmasked — reduce with the mask.
    """
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"clip ranges must be >= 0, got eps_low={eps_low} eps_high={eps_high}")
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip={dual_clip} must be > 1")
    adv = _per_token(advantages, logprobs)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -adv * ratio
    clipped_term = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped_term)
    was_clipped = clipped_term > unclipped
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
        was_clipped = was_clipped | dual
    return loss, was_clipped


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
    loss, clipped = clipped_surrogate_tokens(
        logprobs, old_logprobs, advantages, eps_low=eps_low, eps_high=eps_high)
    clip_fraction = token_mean(clipped.to(logprobs.dtype), mask)
    return token_mean(loss, mask), clip_fraction.detach()


def k3_kl(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, *, clamp: float | None = None,
    log_ratio_clamp: float = 20.0,
) -> torch.Tensor:
    """k3 ("low-variance") estimator of KL(π_θ ‖ π_ref) per token: exp(d) - d - 1,
    d = ref_logprobs - logprobs; >= 0 and unbiased under samples from π_θ
    (Schulman, "Approximating KL divergence", 2020; used by GRPO, arXiv 2402.03300).

    Args:
        logprobs, ref_logprobs: (B, T).
        clamp: None (default) for the exact value. A number c reproduces verl's
            `low_var_kl`: d clamped to ±log_ratio_clamp (20) before exp, k3 to ±c (verl: 10).
    Returns:
        (B, T) per-token estimates (unmasked).
    """
    d = ref_logprobs - logprobs
    if clamp is None:
        return torch.exp(d) - d - 1.0
    d = d.clamp(-log_ratio_clamp, log_ratio_clamp)
    return (torch.exp(d) - d - 1.0).clamp(-clamp, clamp)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax over the last axis, in float32: (B, T, V) -> (B, T).

    Logged by every iteration (spec algorithms-b §6; RAFT++ entropy collapse, arXiv 2504.11343).

    -Σ p log p with log p from log_softmax (stable for large logits); positions with
    p = 0 (e.g. logits of -inf) contribute 0, and a 0 gradient, rather than nan.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    # Zero log p where p = 0 before the product, so neither value nor gradient sees 0·(-inf).
    safe_logp = torch.where(p > 0, logp, torch.zeros((), dtype=logp.dtype))
    return -(p * safe_logp).sum(dim=-1)

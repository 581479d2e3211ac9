"""DPO (sigmoid loss) and preference-pair building from verified rollouts (pure torch).

Rafailov et al., "Direct Preference Optimization", arXiv 2305.18290; specs/algorithms-b.md §1.6:
z = β[(log π_θ(y_w) - log π_ref(y_w)) - (log π_θ(y_l) - log π_ref(y_l))], L = -log σ(z).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from cotflow.algorithms.advantages import group_indices
from cotflow.algorithms.losses import apply_mask
from cotflow.verify.rewards import is_correct


def sequence_logprob(token_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log π(y|x) = Σ of token log-probs over response tokens (as DPO, arXiv 2305.18290, needs):
    token_logprobs (B, T), mask (B, T) -> (B,)."""
    return apply_mask(token_logprobs, mask).sum(dim=-1)


def dpo_loss(
    chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor, *, beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean DPO loss (arXiv 2305.18290) over P pairs, softplus(-z) = log(1 + e^{-z}), z per pair.

    Args:
        all (P,) sequence log-probs (`sequence_logprob`); the ref ones carry no gradient.
        beta: β > 0 (VerIPO 0.1).
    Returns:
        (loss scalar, z (P,) detached: the reward margin, for logging). ∂L/∂z = -σ(-z), so
        each pair's gradient is -β·σ(-z)·[∇log π(y_w) - ∇log π(y_l)].
    """
    if not beta > 0:
        raise ValueError(f"beta={beta} must be > 0")
    if chosen_logp.numel() == 0:
        raise ValueError("dpo_loss needs at least one pair")
    z = beta * ((chosen_logp - ref_chosen_logp) - (rejected_logp - ref_rejected_logp))
    return F.softplus(-z).mean(), z.detach()


def dpo_nll_loss(
    chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor, chosen_tokens: torch.Tensor, *, beta: float,
    nll_coef: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO plus α·NLL of the chosen response: iterative RPO (Pang et al., "Iterative
    Reasoning Preference Optimization", arXiv 2404.19733, eq. 1), the term that keeps the
    chosen likelihood from falling with the rejected one:

        L = mean_p [ softplus(-z_p) + α · (−log π_θ(y_w) / |y_w|) ]

    Args:
        as `dpo_loss`, plus chosen_tokens (P,): |y_w|, response tokens of each chosen.
        nll_coef: α ≥ 0 (RPO: 1); 0 is `dpo_loss` exactly.
    Returns:
        (loss scalar, z (P,) detached, the mean NLL term (per token) detached).
    """
    if nll_coef < 0:
        raise ValueError(f"nll_coef={nll_coef} must be >= 0")
    if chosen_tokens.shape != chosen_logp.shape or not bool((chosen_tokens > 0).all()):
        raise ValueError("chosen_tokens must hold one positive count per pair")
    dpo, z = dpo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp,
                      beta=beta)
    nll = (-chosen_logp / chosen_tokens).mean()
    if not nll_coef:
        return dpo, z, nll.detach()
    return dpo + nll_coef * nll, z, nll.detach()


def _balanced_pairs(n_long: int, n_short: int) -> list[tuple[int, int]]:
    # Diagonals (t, (t + s) mod n_short): the first n_short pairs use distinct members on
    # both sides; the first n_long use each member of the longer side once and the shorter
    # side round-robin; all n_long·n_short pairs appear once.
    return [(t, (t + s) % n_short) for s in range(n_short) for t in range(n_long)]


def build_pairs(
    prompt_ids: Sequence[str], rewards: Sequence[float], *, max_pairs_per_prompt: int, seed: int,
) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs from verified rollouts for DPO (arXiv 2305.18290; VerIPO
    builds its pairs from GRPO rollouts, arXiv 2505.19000). prompt_ids, rewards: N each.

    Rule: within each prompt, chosen are the correct rollouts (cotflow.verify.rewards.is_correct),
    rejected the others.
    Both lists are shuffled by an RNG seeded with (seed, prompt id), so a prompt's pairs do
    not depend on the other prompts in the batch. Pairs are then taken so that no sample is
    reused before every sample on its side has been used: first min(a, b) pairs with
    distinct chosen and distinct rejected; then the larger side keeps drawing fresh samples
    while the smaller cycles; then further rounds, never repeating a pair. At most
    max_pairs_per_prompt pairs per prompt (fewer if a·b is smaller; none when a prompt has
    no correct or no incorrect sample). Prompts in order of first appearance.
    """
    if len(prompt_ids) != len(rewards):
        raise ValueError(f"{len(prompt_ids)} prompt ids but {len(rewards)} rewards")
    if max_pairs_per_prompt < 1:
        raise ValueError(f"max_pairs_per_prompt={max_pairs_per_prompt} must be >= 1")
    pairs: list[tuple[int, int]] = []
    for prompt, idx in group_indices(prompt_ids).items():
        chosen = [i for i in idx if is_correct(rewards[i])]
        rejected = [i for i in idx if not is_correct(rewards[i])]
        if not chosen or not rejected:
            continue
        rng = random.Random(f"{seed}\x00{prompt}")  # str seeds hash with sha512: stable
        rng.shuffle(chosen)
        rng.shuffle(rejected)
        chosen_long = len(chosen) >= len(rejected)
        long, short = (chosen, rejected) if chosen_long else (rejected, chosen)
        for t, s in _balanced_pairs(len(long), len(short))[:max_pairs_per_prompt]:
            pairs.append((long[t], short[s]) if chosen_long else (short[s], long[t]))
    return pairs

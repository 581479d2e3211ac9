"""Outcome advantages for group-sampled RL (GRPO family, Reinforce-Rej). Pure torch.

Every response i of a prompt's group gets one scalar Â_i, broadcast to its tokens.

- GRPO: Shao et al., "DeepSeekMath", arXiv 2402.03300 — Â = (r - mean) / (std + eps).
- Dr.GRPO: Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783 — Â = r - mean.
- Reinforce-Rej: Xiong et al., "A Minimalist Approach to LLM Reasoning", arXiv 2504.11343.
Conventions and worked numbers: specs/algorithms-b.md §1.2, §1.3, §1.7, §5.2.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import torch

from cotflow.algorithms._checks import check_choice

StdMode = Literal["sample", "population", "none"]
STD_MODES = ("sample", "population", "none")


def group_advantages(
    rewards: torch.Tensor, *, std: StdMode, eps: float,
    singleton: Literal["zero", "raw"] = "zero",
) -> torch.Tensor:
    """Advantages of one group: (r - mean) / (std + eps), or r - mean when std="none".

    GRPO arXiv 2402.03300; Dr.GRPO (std="none") arXiv 2503.20783; spec §1.2-1.3.

    Args:
        rewards: (G,) rewards of the G responses to one prompt.
        std: "sample" (unbiased, N-1: verl, TRL), "population" (N: NFT's GRPO equivalence,
            SPO repo) or "none" (Dr.GRPO).
        eps: added to the std (verl 1e-6, TRL 1e-4); ignored when std="none".
        singleton: a group of one has no baseline. "zero" (default) uses mean = r, so
            Â = 0; "raw" is verl's mean 0 / std 1, i.e. Â = r / (1 + eps) (Â = r for "none").
    Returns:
        (G,) advantages, in the rewards' floating dtype (float32 for integer input).
        A group whose rewards are all equal gets exact zeros: computing r - mean in floating
        point could leave ±1 ulp, which a std of ~0 would blow up.
    """
    check_choice("std", std, STD_MODES)
    check_choice("singleton", singleton, ("zero", "raw"))
    if rewards.dim() != 1 or rewards.numel() == 0:
        raise ValueError(
            f"rewards must be a non-empty 1-D tensor, got shape {tuple(rewards.shape)}")
    if eps < 0:
        raise ValueError(f"eps={eps} must be >= 0")
    out_dtype = rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()
    r = rewards.to(torch.float64)
    if r.numel() == 1:
        if singleton == "zero":
            return torch.zeros_like(r, dtype=out_dtype)
        return (r if std == "none" else r / (1.0 + eps)).to(out_dtype)
    if bool((r == r[0]).all()):
        return torch.zeros_like(r, dtype=out_dtype)
    centred = r - r.mean()
    if std == "none":
        return centred.to(out_dtype)
    scale = r.std(correction=1 if std == "sample" else 0)
    return (centred / (scale + eps)).to(out_dtype)


def group_indices(groups: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    """Positions of each group id, groups in order of first appearance."""
    out: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        out.setdefault(g, []).append(i)
    return out


def _grouped_rewards(
    rewards: Sequence[float], groups: Sequence[Hashable],
) -> dict[Hashable, list[int]]:
    if len(rewards) != len(groups):
        raise ValueError(f"{len(rewards)} rewards but {len(groups)} group ids")
    return group_indices(groups)


def grouped_advantages(
    rewards: Sequence[float], groups: Sequence[Hashable], *, std: StdMode, eps: float,
    singleton: Literal["zero", "raw"] = "zero",
) -> list[float]:
    """`group_advantages` within each group id; per-sample values in input order (arXiv 2402.03300).

    Args:
        rewards: N rewards. groups: N group ids (usually the prompt id).
    """
    out = [0.0] * len(rewards)
    for idx in _grouped_rewards(rewards, groups).values():
        adv = group_advantages(torch.tensor([float(rewards[i]) for i in idx], dtype=torch.float64),
                               std=std, eps=eps, singleton=singleton)
        for i, a in zip(idx, adv.tolist(), strict=True):
            out[i] = a
    return out


def _all_equal(values: list[float]) -> bool:
    return all(v == values[0] for v in values)


def zero_variance_share(rewards: Sequence[float], groups: Sequence[Hashable]) -> float:
    """Share in [0, 1] of groups whose rewards are all equal (std = 0; a group of one counts).

    These groups carry no GRPO signal (Â = 0; arXiv 2402.03300); spec §6 asks every
    iteration to log this. rewards, groups: N values each.
    """
    by_group = _grouped_rewards(rewards, groups)
    if not by_group:
        raise ValueError("zero_variance_share of an empty batch is undefined")
    flat = sum(_all_equal([float(rewards[i]) for i in idx]) for idx in by_group.values())
    return flat / len(by_group)


def informative_groups(rewards: Sequence[float], groups: Sequence[Hashable]) -> set:
    """Group ids whose rewards are not all equal (std > 0): those DAPO's dynamic sampling keeps
    (arXiv 2503.14476). rewards, groups: N values each."""
    return {g for g, idx in _grouped_rewards(rewards, groups).items()
            if not _all_equal([float(rewards[i]) for i in idx])}


def reinforce_rej_advantages(rewards: Sequence[float], groups: Sequence[Hashable]) -> list[float]:
    """Reinforce-Rej (arXiv 2504.11343, spec §5.2): Â_i = r_i raw (no baseline, no std
    scaling) in groups with std > 0; 0 for every member of an all-equal group.

    Rewards should be ±1: with {0, 1} rewards the incorrect samples get Â = 0 and negatives
    are silently ignored (RLHFlow/Minimal-RL#6).
    """
    keep = informative_groups(rewards, groups)
    return [float(r) if g in keep else 0.0 for r, g in zip(rewards, groups, strict=True)]

"""DAPO pieces: overlong reward shaping and the dynamic-sampling group filter (pure python).

Yu et al., "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", arXiv 2503.14476;
specs/algorithms-b.md §1.4. Clip-higher is `losses.clipped_surrogate_tokens` with
eps_high > eps_low; token-level normalisation is `losses.aggregate(..., "token-mean")`.
"""

from __future__ import annotations

from cotflow.algorithms.advantages import informative_groups

__all__ = ["informative_groups", "overlong_penalty"]


def overlong_penalty(length: int, *, max_len: int, cache_len: int) -> float:
    """Soft overlong punishment R_len(|y|) of DAPO (arXiv 2503.14476), added to the reward.

    0 for |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache, falling linearly
    from 0 to -1, for L_max - L_cache < |y| <= L_max; -1 beyond L_max.

    Args:
        length: response length |y| in tokens. max_len: L_max. cache_len: L_cache,
            0 < L_cache <= L_max.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"need 0 < cache_len <= max_len, got cache_len={cache_len} "
                         f"max_len={max_len}")
    if length < 0:
        raise ValueError(f"length={length} must be >= 0")
    free = max_len - cache_len
    if length <= free:
        return 0.0
    if length <= max_len:
        return (free - length) / cache_len
    return -1.0

"""GVM: per-prompt sample budgets that minimise the variance of the RAFT gradient (pure numpy).

Yao et al., "Optimizing Chain-of-Thought Reasoners via Gradient Variance Minimization in
Rejection Sampling and RL", arXiv 2505.02391; rule and conventions as in `RLHFlow/GVM`
(`em/stage_2_calc_sample_size.py`), specs/algorithms-a.md §1.2–§1.4.

Shapes: K prompts; `p` (K,) acceptance rates in [0, 1], `G` (K,) mean gradient norms ≥ 0.

    w_i = 0                                   if p_i == 0 or G_i == 0
    w_i = G_i / sqrt(p_i + α / p_i^(β−1))     otherwise
    n_i = integerize(N · w_i / Σ_j w_j)        (sum-preserving rounding)

Additions of ours, each off by default and so reducing to the rule above: a per-prompt
floor and cap (the box-constrained optimum n_i = clip(λ·w_i, floor, cap)), and a fallback
for Σ w = 0 (the repo divides by zero there; we split the budget equally, i.e. uniform).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def gvm_weights(p: Sequence[float] | np.ndarray, G: Sequence[float] | np.ndarray, *,
                alpha: float, beta: float) -> np.ndarray:
    """w_i = G_i / sqrt(p_i + α/p_i^(β−1)), 0 where p_i or G_i is 0. Returns (K,) float64."""
    p = np.asarray(p, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64)
    if p.shape != G.shape or p.ndim != 1:
        raise ValueError(f"p and G must be 1-D of one length, got {p.shape} and {G.shape}")
    if not (np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()):
        raise ValueError(f"acceptance rates must lie in [0, 1], got {p.tolist()}")
    if not (np.isfinite(G).all() and (G >= 0).all()):
        raise ValueError(f"gradient norms must be finite and >= 0, got {G.tolist()}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    w = np.zeros_like(p)
    live = (p > 0) & (G > 0)
    w[live] = G[live] / np.sqrt(p[live] + alpha / p[live] ** (beta - 1))
    return w


def apply_filters(ratios: np.ndarray, p: np.ndarray, budget: int, *, filter_threshold: float,
                  filter_insufficient: float) -> np.ndarray:
    """Zero the ratios of prompts with p_i > filter_threshold, then of prompts whose expected
    accepted count p_i·ratio_i·N < filter_insufficient (0: off); re-normalise what is left.

    If the filters leave nothing, returns zeros (the caller decides what that means)."""
    r = np.where(np.asarray(p) > filter_threshold, 0.0, ratios)
    r = _normalise(r)
    if filter_insufficient > 0:
        r = np.where(p * r * budget < filter_insufficient, 0.0, r)
        r = _normalise(r)
    return r


def _normalise(x: np.ndarray) -> np.ndarray:
    total = x.sum()
    return x / total if total > 0 else np.zeros_like(x)


def round_preserving_sum(scaled: Sequence[float] | np.ndarray, total: int) -> np.ndarray:
    """Integers n with Σ n = total, close to `scaled` (whose sum must be `total`).

    n = round-half-to-even(s); the deficit e = total − Σ n goes +1 to the e largest residuals
    s − n (e > 0) or −1 to the |e| smallest (e < 0), ties to the lower index. If s lies in
    [lo, hi] for integers lo, hi, so does n: a +1 lands only where n < s, a −1 where n > s.
    """
    s = np.asarray(scaled, dtype=np.float64)
    if not math.isclose(float(s.sum()), total, rel_tol=1e-9, abs_tol=1e-6):
        raise ValueError(f"scaled values sum to {s.sum()}, not the total {total}")
    n = np.round(s).astype(np.int64)  # NumPy rounds half to even, as the paper's code
    residual = s - n
    e = int(total - n.sum())
    if e > 0:
        order = np.argsort(-residual, kind="stable")
        n[order[:e]] += 1
    elif e < 0:
        order = np.argsort(residual, kind="stable")
        n[order[:-e]] -= 1
    return n


def box_scaled(ratios: np.ndarray, budget: int, *, floor: int, cap: int | None) -> np.ndarray:
    """Real allocations x_i = clip(λ·ratio_i, floor, cap) with Σ x = budget.

    The minimiser of Σ G_i²/(x_i·p̃_i) under the box (KKT); with floor 0 and no cap it is
    budget·ratio. Prompts of ratio 0 get the floor; budget that the weighted prompts cannot
    absorb (all at the cap) is split equally among the others; with no weighted prompt at
    all the whole budget is split equally."""
    k = len(ratios)
    hi = math.inf if cap is None else float(cap)
    if floor * k > budget:
        raise ValueError(f"floor {floor} × {k} prompts exceeds the budget {budget}")
    if hi * k < budget:
        raise ValueError(f"cap {cap} × {k} prompts is below the budget {budget}")
    live = ratios > 0
    if not live.any():
        return np.full(k, budget / k)

    def filled(lam: float) -> np.ndarray:
        return np.where(live, np.clip(lam * ratios, floor, hi), float(floor))

    most = np.where(live, hi, float(floor))  # every weighted prompt at its cap
    if most.sum() <= budget:
        x = most
        x[~live] += (budget - most.sum()) / max(int((~live).sum()), 1)
        return x
    # Σ clip(λ·r, floor, cap) is continuous and non-decreasing in λ: bisect for the budget.
    lo, up = 0.0, budget / ratios[live].min() + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + up)
        lo, up = (mid, up) if filled(mid).sum() < budget else (lo, mid)
    x = filled(up)
    # Remove the bisection's round-off inside the box, so that Σ x == budget.
    gap = budget - x.sum()
    room = (hi - x) if gap > 0 else (x - floor)
    room = np.where(live & np.isfinite(room), room, 0.0)
    if gap and room.sum() > 0:
        x = x + np.sign(gap) * room * min(1.0, abs(gap) / room.sum())
    return x


def allocate(p: Sequence[float] | np.ndarray, G: Sequence[float] | np.ndarray, budget: int, *,
             alpha: float = 1e-3, beta: float = 2.0, filter_threshold: float = 1.0,
             filter_insufficient: float = 0.0, floor: int = 0,
             cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The GVM allocation: (n (K,) int64 with Σ n = budget, ratios (K,) after filters).

    Defaults are the paper's (α = 1e-3, β = 2, filters off, no floor or cap); params.yaml
    passes its own values. With Σ w = 0 after filters the budget is split equally."""
    if budget < 0 or int(budget) != budget:
        raise ValueError(f"budget must be a non-negative integer, got {budget}")
    if floor < 0 or (cap is not None and cap < max(floor, 1)):
        raise ValueError(f"need 0 <= floor <= cap and cap >= 1, got floor={floor} cap={cap}")
    p = np.asarray(p, dtype=np.float64)
    w = gvm_weights(p, G, alpha=alpha, beta=beta)
    if len(w) == 0:
        if budget:
            raise ValueError(f"a budget of {budget} samples needs at least one prompt")
        return np.zeros(0, dtype=np.int64), w
    ratios = apply_filters(_normalise(w), p, budget, filter_threshold=filter_threshold,
                           filter_insufficient=filter_insufficient)
    if floor == 0 and cap is None and ratios.sum() > 0:
        scaled = ratios * budget  # the paper's path, exactly
    else:
        scaled = box_scaled(ratios, budget, floor=floor, cap=cap)
    return round_preserving_sum(scaled, budget), ratios

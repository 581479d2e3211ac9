"""GVM allocation on the specs' hand-computed numbers, rounding edge cases and invariants."""

from __future__ import annotations

import numpy as np
import pytest

from cotflow.algorithms.gvm import allocate, apply_filters, gvm_weights, round_preserving_sum


def test_worked_example_three_prompts():
    """specs/algorithms-a.md §1.9: P1 p=.75 G=3, P2 p=.25 G=6, P3 p=0; N = 12."""
    w = gvm_weights([0.75, 0.25, 0.0], [3.0, 6.0, 0.0], alpha=1e-3, beta=2.0)
    assert w == pytest.approx([3.461027, 11.905137, 0.0], abs=1e-6)
    n, ratios = allocate([0.75, 0.25, 0.0], [3.0, 6.0, 0.0], 12)
    assert ratios == pytest.approx([0.225237, 0.774763, 0.0], abs=1e-6)
    assert n.tolist() == [3, 9, 0]


def test_worked_example_four_prompts():
    """§1.9 second check: add P4 with p = 1, G = 2; N = 16 -> [3, 11, 0, 2]."""
    n, ratios = allocate([0.75, 0.25, 0.0, 1.0], [3.0, 6.0, 0.0, 2.0], 16)
    assert ratios == pytest.approx([0.199309, 0.685576, 0.0, 0.115116], abs=1e-6)
    assert n.tolist() == [3, 11, 0, 2]


def test_consolidated_vector_17():
    """specs/algorithms-b.md §5.6 / §7 item 17: G=[2,4,1,3], p=[.5,.125,1,0], N=32."""
    p, G = [0.5, 0.125, 1.0, 0.0], [2.0, 4.0, 1.0, 3.0]
    assert gvm_weights(p, G, alpha=1e-3, beta=2.0) == pytest.approx(
        [2.82279, 10.96817, 0.99950, 0.0], abs=1e-5)
    n, ratios = allocate(p, G, 32)
    assert ratios == pytest.approx([0.19085, 0.74157, 0.06758, 0.0], abs=1e-5)
    assert n.tolist() == [6, 24, 2, 0]


def test_beta_and_alpha_enter_the_denominator():
    # β = 3: sqrt(p + α/p²); p = 0.5, α = 0.1 -> sqrt(0.5 + 0.4) = sqrt(0.9)
    assert gvm_weights([0.5], [3.0], alpha=0.1, beta=3.0)[0] == pytest.approx(3 / 0.9 ** 0.5)
    # α = 0: the unregularised optimum G/√p (§1.9: ratios .224009 / .775991)
    w = gvm_weights([0.75, 0.25], [3.0, 6.0], alpha=0.0, beta=2.0)
    assert (w / w.sum()) == pytest.approx([0.224009, 0.775991], abs=1e-6)


def test_zero_gradient_gets_zero_weight_even_when_accepted():
    assert gvm_weights([0.5, 0.5], [0.0, 1.0], alpha=1e-3, beta=2.0)[0] == 0.0


def test_rounding_half_to_even_then_largest_residual():
    # 2.5 -> 2, 1.5 -> 2, 3.0 -> 3: Σ = 7 = total, no correction (NumPy half-to-even).
    assert round_preserving_sum([2.5, 1.5, 3.0], 7).tolist() == [2, 2, 3]
    # 0.4 ×5 -> 0; deficit 2 goes to the largest residuals, ties to the lower index.
    assert round_preserving_sum([0.4] * 5, 2).tolist() == [1, 1, 0, 0, 0]
    # 1.6, 1.6, 1.8 -> 2, 2, 2 = 6 > 5: one -1 where the residual is smallest (-0.4, first).
    assert round_preserving_sum([1.6, 1.6, 1.8], 5).tolist() == [1, 2, 2]
    with pytest.raises(ValueError, match="sum to"):
        round_preserving_sum([1.0, 1.0], 3)


def test_budget_below_number_of_prompts_and_ties():
    n, _ = allocate([0.5] * 5, [1.0] * 5, 2)
    assert n.tolist() == [1, 1, 0, 0, 0]
    n, _ = allocate([0.5, 0.5, 0.5], [1.0, 1.0, 1.0], 4)
    assert n.tolist() == [2, 1, 1]  # 4/3 each: the tie goes to the first prompt
    n, _ = allocate([0.5, 0.25], [1.0, 1.0], 0)
    assert n.tolist() == [0, 0]


def test_all_weights_zero_splits_the_budget_equally():
    n, ratios = allocate([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 7)
    assert ratios.tolist() == [0.0, 0.0, 0.0]
    assert n.tolist() == [3, 2, 2]
    n, _ = allocate([0.0, 1.0], [5.0, 0.0], 4)  # p=0 or G=0 each zero the weight
    assert n.tolist() == [2, 2]


def test_filters():
    p = np.array([0.5, 0.125, 1.0, 0.0])
    G = [2.0, 4.0, 1.0, 3.0]
    # threshold 0.9 drops the solved prompt; the rest re-normalise: 2.82279 / 13.79096.
    n, ratios = allocate(p, G, 32, filter_threshold=0.9)
    assert ratios == pytest.approx([0.204684, 0.795316, 0.0, 0.0], abs=1e-6)
    assert n.tolist() == [7, 25, 0, 0]
    # expected accepted counts p·r·N = 3.05, 2.97, 2.16 -> a threshold of 2.5 drops prompt 3.
    r = apply_filters(np.array([0.19085192, 0.7415707, 0.06757738, 0.0]), p, 32,
                      filter_threshold=1.0, filter_insufficient=2.5)
    assert r == pytest.approx([0.204684, 0.795316, 0.0, 0.0], abs=1e-6)


def test_floor_and_cap_are_the_box_constrained_optimum():
    p, G = [0.5, 0.125, 1.0, 0.0], [2.0, 4.0, 1.0, 3.0]
    # cap 20 binds prompt 2; λ solves 0.19085λ + 0.06758λ = 32 - 20 - 1 -> λ = 42.566.
    n, _ = allocate(p, G, 32, floor=1, cap=20)
    assert n.tolist() == [8, 20, 3, 1]
    # every weighted prompt capped: the spare budget goes equally to the unweighted one.
    n, _ = allocate([0.5, 0.5, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], 12, cap=4)
    assert n.tolist() == [4, 4, 2, 2]
    with pytest.raises(ValueError, match="floor"):
        allocate([0.5, 0.5], [1.0, 1.0], 3, floor=2)
    with pytest.raises(ValueError, match="cap"):
        allocate([0.5, 0.5], [1.0, 1.0], 9, cap=4)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="acceptance"):
        gvm_weights([1.5], [1.0], alpha=1e-3, beta=2.0)
    with pytest.raises(ValueError, match="gradient norms"):
        gvm_weights([0.5], [float("nan")], alpha=1e-3, beta=2.0)
    with pytest.raises(ValueError, match="one length"):
        gvm_weights([0.5, 0.5], [1.0], alpha=1e-3, beta=2.0)
    with pytest.raises(ValueError, match="budget"):
        allocate([0.5], [1.0], -1)


@pytest.mark.parametrize("seed", range(400))
def test_sum_is_the_budget_and_bounds_hold(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 40))
    n_prime = int(rng.choice([1, 4, 8, 16]))
    p = rng.integers(0, n_prime + 1, k) / n_prime
    G = np.where(rng.random(k) < 0.2, 0.0, rng.gamma(2.0, 3.0, k))
    if rng.random() < 0.3:
        G[rng.integers(0, k)] = G.max() * 1000  # heavy tails
    floor = int(rng.integers(0, 3)) if rng.random() < 0.5 else 0
    budget = int(rng.integers(floor * k, floor * k + 20 * k + 1))
    cap = None
    if rng.random() < 0.5:
        cap = max(floor, 1, -(-budget // k)) + int(rng.integers(0, 6))
    n, ratios = allocate(p, G, budget, floor=floor, cap=cap,
                         filter_threshold=float(rng.choice([1.0, 0.9])),
                         filter_insufficient=float(rng.choice([0.0, 0.5])))
    assert n.dtype == np.int64 and n.sum() == budget
    assert (n >= floor).all() and (cap is None or (n <= cap).all())
    if floor == 0 and cap is None and ratios.sum() > 0:
        # no box: within one of the exact share, zero where the ratio is zero
        assert (np.abs(n - ratios * budget) < 1.0 + 1e-9).all()
        assert (n[ratios == 0] == 0).all()

"""GRPO family on the spec's hand-computed numbers (specs/algorithms-b.md §1.7, §7 items 1-9,
14, 16; §5.6 Reinforce-Rej)."""

import math

import pytest
import torch

from cotflow.algorithms.advantages import (
    group_advantages,
    grouped_advantages,
    reinforce_rej_advantages,
    zero_variance_share,
)
from cotflow.algorithms.dapo import informative_groups, overlong_penalty
from cotflow.algorithms.losses import (
    aggregate,
    clipped_surrogate,
    clipped_surrogate_tokens,
    entropy_from_logits,
    k3_kl,
)

R = torch.tensor([1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize(("std", "eps", "expected"), [
    ("sample", 0.0, [1.5, -0.5, -0.5, -0.5]),  # item 1
    ("sample", 1e-6, [1.4999970, -0.4999990, -0.4999990, -0.4999990]),  # verl
    ("sample", 1e-4, [1.4997001, -0.4999000, -0.4999000, -0.4999000]),  # TRL
    ("population", 1e-8, [1.7320508, -0.5773503, -0.5773503, -0.5773503]),  # item 2
    ("population", 0.0, [1.7320508, -0.5773503, -0.5773503, -0.5773503]),
    ("none", 0.0, [0.75, -0.25, -0.25, -0.25]),  # item 3, Dr.GRPO
    ("none", 1e-6, [0.75, -0.25, -0.25, -0.25]),  # eps only matters with a std
])
def test_group_advantages_1_0_0_0(std, eps, expected):
    assert group_advantages(R, std=std, eps=eps).tolist() == pytest.approx(expected, abs=1e-7)


def test_group_advantages_1_1_0_0():
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert group_advantages(r, std="sample", eps=0.0).tolist() == pytest.approx(
        [0.8660254, 0.8660254, -0.8660254, -0.8660254], abs=1e-7)
    assert group_advantages(r, std="population", eps=0.0).tolist() == pytest.approx(
        [1.0, 1.0, -1.0, -1.0], abs=1e-7)


def test_ton_group_trl_eps():
    # item 14: TRL's sample std + 1e-4; mean 1.75, std 0.5
    adv = group_advantages(torch.tensor([2.0, 2.0, 2.0, 1.0]), std="sample", eps=1e-4)
    assert adv.tolist() == pytest.approx([0.4999000] * 3 + [-1.4997001], abs=1e-7)


def test_all_equal_group_is_exactly_zero():
    # 0.1 * 3 / 3 is not exactly 0.1 in floating point; an eps-sized std must not amplify it.
    for std in ("sample", "population", "none"):
        adv = group_advantages(torch.tensor([0.1, 0.1, 0.1]), std=std, eps=1e-12)
        assert adv.tolist() == [0.0, 0.0, 0.0]


def test_group_of_one():
    one = torch.tensor([1.0])
    assert group_advantages(one, std="sample", eps=1e-6).tolist() == [0.0]
    assert group_advantages(one, std="none", eps=0.0).tolist() == [0.0]
    # verl: mean 0, std 1
    raw = group_advantages(one, std="sample", eps=1e-6, singleton="raw")
    assert raw.item() == pytest.approx(1 / (1 + 1e-6))
    assert group_advantages(one, std="none", eps=1e-6, singleton="raw").item() == 1.0


def test_group_advantages_keeps_float_dtype_and_promotes_int():
    assert group_advantages(R.double(), std="none", eps=0.0).dtype == torch.float64
    assert group_advantages(torch.tensor([1, 0]), std="none", eps=0.0).dtype == torch.float32


def test_grouped_advantages_input_order():
    rewards = [1.0, 2.0, 0.0, 2.0, 0.0, 0.0, 2.0, 5.0]
    groups = ["a", "t", "a", "t", "a", "a", "t", "solo"]
    # a: [1, 0, 0, 0]; t: [2, 2, 2] all equal; solo: one sample
    assert grouped_advantages(rewards, groups, std="sample", eps=0.0) == pytest.approx(
        [1.5, 0.0, -0.5, 0.0, -0.5, -0.5, 0.0, 0.0])
    assert grouped_advantages(rewards, groups, std="none", eps=0.0) == pytest.approx(
        [0.75, 0.0, -0.25, 0.0, -0.25, -0.25, 0.0, 0.0])


def test_zero_variance_share_and_informative_groups():
    rewards = [1, 1, 0, 1, 0, 0, 1]
    groups = [0, 0, 1, 1, 2, 2, 3]
    assert zero_variance_share(rewards, groups) == 0.75  # groups 0, 2 and the single 3
    assert informative_groups(rewards, groups) == {1}
    assert informative_groups([1, 0], ["p", "p"]) == {"p"}


def test_reinforce_rej():
    # item 16: all-correct and all-wrong groups are filtered, mixed keeps the raw ±1
    rewards = [1, 1, 1, 1, -1, -1, -1, -1, 1, -1, -1, 1]
    groups = ["x"] * 4 + ["y"] * 4 + ["z"] * 4
    assert reinforce_rej_advantages(rewards, groups) == [0.0] * 8 + [1.0, -1.0, -1.0, 1.0]
    # GRPO on the mixed group for comparison
    assert grouped_advantages(rewards[8:], groups[8:], std="sample", eps=0.0) == pytest.approx(
        [0.8660254, -0.8660254, -0.8660254, 0.8660254], abs=1e-7)


@pytest.mark.parametrize("call", [
    lambda: group_advantages(R, std="unbiased", eps=0.0),
    lambda: grouped_advantages([1.0], ["a"], std="Sample", eps=0.0),
    lambda: aggregate(torch.ones(1, 1), torch.ones(1, 1), "seq-mean"),
])
def test_bad_mode_names(call):
    with pytest.raises(ValueError, match="'(unbiased|Sample|seq-mean)'"):
        call()


def test_bad_inputs():
    with pytest.raises(ValueError, match="2 rewards but 1 group"):
        grouped_advantages([1.0, 0.0], ["a"], std="none", eps=0.0)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        group_advantages(torch.tensor([]), std="none", eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        group_advantages(R, std="sample", eps=-1.0)
    with pytest.raises(ValueError, match="empty batch"):
        zero_variance_share([], [])


# -- aggregation (§1.7 c, item 4) --
VALUES = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
MASK = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])


@pytest.mark.parametrize(("mode", "expected"), [
    ("token-mean", 0.6666667),
    ("seq-mean-token-mean", 0.75),
    ("seq-mean-token-sum", 2.0),
])
def test_aggregation_modes(mode, expected):
    assert aggregate(VALUES, MASK, mode).item() == pytest.approx(expected, abs=1e-7)


def test_drgrpo_aggregation_and_verl_factor():
    assert aggregate(VALUES, MASK, "seq-mean-token-sum-norm", constant=8).item() == 0.25
    # verl's variant, padded width 8, is B = 2 times the oat form: 4/8 = 0.5
    verl = aggregate(VALUES, MASK, "seq-mean-token-sum-norm", constant=8) * VALUES.shape[0]
    assert verl.item() == 0.5
    with pytest.raises(ValueError, match="needs constant"):
        aggregate(VALUES, MASK, "seq-mean-token-sum-norm")


def test_aggregation_empty_rows_count_in_b():
    values = torch.tensor([[1.0, 1.0], [9.0, float("nan")]])  # padding may hold garbage
    mask = torch.tensor([[1, 1], [0, 0]])
    assert aggregate(values, mask, "token-mean").item() == 1.0
    assert aggregate(values, mask, "seq-mean-token-mean").item() == 0.5
    assert aggregate(values, mask, "seq-mean-token-sum").item() == 1.0
    assert aggregate(values, mask, "seq-mean-token-sum-norm", constant=4).item() == 0.25
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum"):
        assert aggregate(values, torch.zeros(2, 2), mode).item() == 0.0


def test_aggregation_shape_mismatch():
    with pytest.raises(ValueError, match="same"):
        aggregate(VALUES, MASK[:, :3], "token-mean")


# -- clipped surrogate (§1.7 d, item 5) --
def _surrogate(rho, adv, eps_high, dual_clip=None):
    lp = torch.tensor([[math.log(rho)]], requires_grad=True)
    loss, clipped = clipped_surrogate_tokens(lp, torch.zeros(1, 1), torch.tensor([adv]),
                                             eps_low=0.2, eps_high=eps_high, dual_clip=dual_clip)
    loss.sum().backward()
    return -loss.item(), bool(clipped.item()), lp.grad.item()


@pytest.mark.parametrize(("rho", "adv", "eps_high", "objective", "clipped"), [
    (1.25, 1.0, 0.2, 1.20, True),
    (1.25, 1.0, 0.28, 1.25, False),
    (0.7, -1.0, 0.2, -0.8, True),
    (0.7, -1.0, 0.28, -0.8, True),
    (1.25, -1.0, 0.2, -1.25, False),
    (1.25, -1.0, 0.28, -1.25, False),
])
def test_clip_higher_table(rho, adv, eps_high, objective, clipped):
    obj, was_clipped, grad = _surrogate(rho, adv, eps_high)
    assert obj == pytest.approx(objective)
    assert was_clipped is clipped
    # clipped: no gradient; unclipped: d(-A·ρ)/d log π = -A·ρ
    assert grad == pytest.approx(0.0 if clipped else -adv * rho)


def test_dual_clip():
    # A < 0, ρ = 5: PPO loss max(5, 1.2) = 5, dual clip c = 3 bounds it at 3, no gradient
    obj, clipped, grad = _surrogate(5.0, -1.0, 0.2, dual_clip=3.0)
    assert (obj, clipped, grad) == (pytest.approx(-3.0), True, 0.0)
    # below the bound nothing changes
    obj, clipped, grad = _surrogate(2.0, -1.0, 0.2, dual_clip=3.0)
    assert (obj, clipped, grad) == (pytest.approx(-2.0), False, pytest.approx(2.0))
    # A > 0 is untouched by the dual clip
    assert _surrogate(5.0, 1.0, 0.2, dual_clip=3.0) == _surrogate(5.0, 1.0, 0.2)
    with pytest.raises(ValueError, match="dual_clip"):
        _surrogate(1.0, 1.0, 0.2, dual_clip=1.0)


def test_clipped_surrogate_is_token_mean_of_tokens():
    g = torch.Generator().manual_seed(0)
    lp, old = torch.randn(3, 5, generator=g) * 0.3, torch.randn(3, 5, generator=g) * 0.3
    adv, mask = torch.randn(3, generator=g), (torch.rand(3, 5, generator=g) > 0.3).float()
    loss, frac = clipped_surrogate(lp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    tokens, clipped = clipped_surrogate_tokens(lp, old, adv, eps_low=0.2, eps_high=0.28)
    assert loss.item() == pytest.approx(((tokens * mask).sum() / mask.sum()).item())
    assert frac.item() == pytest.approx(((clipped * mask).sum() / mask.sum()).item())


# -- k3 (§1.7 e, item 6) --
def test_k3_values():
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.2, -1.5]])
    assert k3_kl(lp, ref).tolist()[0] == pytest.approx([0.0187308, 0.1487213], abs=1e-7)
    assert k3_kl(lp, lp).tolist() == [[0.0, 0.0]]


def test_k3_clamps_only_when_asked():
    lp, ref = torch.tensor([[0.0]]), torch.tensor([[30.0]])
    assert k3_kl(lp, ref).item() == pytest.approx(math.exp(30) - 31, rel=1e-6)
    assert k3_kl(lp, ref, clamp=10.0).item() == 10.0
    # the log-ratio clamp alone: d = -30 -> -20, k3 = e^-20 + 19
    assert k3_kl(ref, lp, clamp=100.0).item() == pytest.approx(math.exp(-20) + 19)


# -- entropy --
def test_entropy_from_logits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 7, generator=g, dtype=torch.float64) * 50  # large logits
    expected = torch.distributions.Categorical(logits=logits).entropy()
    got = entropy_from_logits(logits)
    assert got.dtype == torch.float32 and got.shape == (2, 3)
    assert torch.allclose(got.double(), expected, atol=1e-5)
    assert entropy_from_logits(torch.zeros(1, 1, 5)).item() == pytest.approx(math.log(5))


def test_entropy_with_masked_vocab_has_finite_gradient():
    logits = torch.tensor([[[0.0, 0.0, float("-inf")]]], requires_grad=True)
    ent = entropy_from_logits(logits)
    assert ent.item() == pytest.approx(math.log(2))
    ent.sum().backward()
    assert torch.isfinite(logits.grad).all()


# -- DAPO overlong penalty (§1.7 g, item 9) --
@pytest.mark.parametrize(("length", "expected"), [
    (16000, 0.0), (16384, 0.0), (18432, -0.5), (20480, -1.0), (21000, -1.0)])
def test_overlong_penalty(length, expected):
    assert overlong_penalty(length, max_len=20480, cache_len=4096) == expected


def test_overlong_penalty_rejects_bad_budget():
    with pytest.raises(ValueError, match="cache_len"):
        overlong_penalty(10, max_len=100, cache_len=200)

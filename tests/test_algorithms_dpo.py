"""DPO loss and pair building (specs/algorithms-b.md §1.6, §1.7 f, §7 items 7-8)."""

import math
from collections import Counter

import pytest
import torch

from cotflow.algorithms.dpo import build_pairs, dpo_loss, sequence_logprob


def _t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


@pytest.mark.parametrize(("logps", "z", "loss"), [
    ((-10.0, -12.0, -11.0, -11.0), 0.2, 0.5981389),  # item 7
    ((-182.4, -95.1, -190.0, -93.5), 0.92, 0.3354138),  # item 8: long chosen
])
def test_dpo_vectors(logps, z, loss):
    chosen, rejected, ref_c, ref_r = (_t(x) for x in logps)
    value, margin = dpo_loss(chosen, rejected, ref_c, ref_r, beta=0.1)
    assert margin.item() == pytest.approx(z, abs=1e-9)
    assert value.item() == pytest.approx(loss, abs=1e-7)


def test_dpo_gradient_weight():
    # ∂L/∂log π(y_w) = -β·σ(-z) = -0.0450166, and +0.0450166 for y_l (§1.7 f)
    chosen, rejected = _t(-10.0).requires_grad_(True), _t(-12.0).requires_grad_(True)
    loss, z = dpo_loss(chosen, rejected, _t(-11.0), _t(-11.0), beta=0.1)
    loss.backward()
    assert torch.sigmoid(z).item() == pytest.approx(0.5498340, abs=1e-7)
    assert chosen.grad.item() == pytest.approx(-0.0450166, abs=1e-7)
    assert rejected.grad.item() == pytest.approx(0.0450166, abs=1e-7)
    assert not z.requires_grad


def test_dpo_at_reference_is_ln2_and_means_over_pairs():
    lp = _t(-3.0, -40.0, -7.5)
    loss, z = dpo_loss(lp, lp.flip(0), lp, lp.flip(0), beta=0.1)
    assert z.tolist() == [0.0, 0.0, 0.0]
    assert loss.item() == pytest.approx(math.log(2))
    both, _ = dpo_loss(_t(-10.0, -182.4), _t(-12.0, -95.1), _t(-11.0, -190.0), _t(-11.0, -93.5),
                       beta=0.1)
    assert both.item() == pytest.approx((0.5981389 + 0.3354138) / 2, abs=1e-7)


def test_dpo_bad_args():
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(_t(0.0), _t(0.0), _t(0.0), _t(0.0), beta=0.0)
    with pytest.raises(ValueError, match="at least one pair"):
        dpo_loss(_t(), _t(), _t(), _t(), beta=0.1)


def test_sequence_logprob_sums_response_tokens_only():
    lp = torch.tensor([[-0.5, -0.2, -0.3, float("-inf")], [-1.0, -2.0, -3.0, -4.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0]])  # prompt and padding excluded
    assert sequence_logprob(lp, mask).tolist() == pytest.approx([-1.0, -5.0])


# -- pair building --
PROMPTS = ["p"] * 5 + ["q"] * 3 + ["r"] * 2 + ["s"] * 2
REWARDS = [1, 0, 1, 0, 0, 1, 1, 1, 0, 0, -1, 1]


def test_pairs_respect_labels_prompts_and_cap():
    pairs = build_pairs(PROMPTS, REWARDS, max_pairs_per_prompt=4, seed=0)
    for c, r in pairs:
        assert REWARDS[c] > 0 >= REWARDS[r] and PROMPTS[c] == PROMPTS[r]
    per_prompt = Counter(PROMPTS[c] for c, _ in pairs)
    # p: 2 correct x 3 wrong -> cap 4; q: all correct; r: all wrong; s: 1 x 1
    assert per_prompt == {"p": 4, "s": 1}
    assert len(set(pairs)) == len(pairs)
    assert [PROMPTS[c] for c, _ in pairs] == ["p"] * 4 + ["s"]  # first-appearance order
    assert pairs[-1] == (11, 10)


def test_pairs_prefer_distinct_samples():
    prompts = ["x"] * 7
    rewards = [1, 1, 0, 0, 0, 0, 1]  # 3 correct, 4 wrong
    for seed in range(5):
        pairs = build_pairs(prompts, rewards, max_pairs_per_prompt=12, seed=seed)
        assert len(pairs) == 12 and len(set(pairs)) == 12  # every pair once
        first3 = pairs[:3]
        assert len({c for c, _ in first3}) == 3 and len({r for _, r in first3}) == 3
        first4 = pairs[:4]
        assert len({r for _, r in first4}) == 4  # every wrong sample before any repeat
        assert max(Counter(c for c, _ in first4).values()) == 2


def test_pairs_deterministic_and_independent_of_other_prompts():
    a = build_pairs(PROMPTS, REWARDS, max_pairs_per_prompt=2, seed=7)
    assert a == build_pairs(PROMPTS, REWARDS, max_pairs_per_prompt=2, seed=7)
    only_p = build_pairs(PROMPTS[:5], REWARDS[:5], max_pairs_per_prompt=2, seed=7)
    assert only_p == a[:2]
    seeds = {tuple(build_pairs(PROMPTS, REWARDS, max_pairs_per_prompt=2, seed=s))
             for s in range(10)}
    assert len(seeds) > 1  # the seed matters


def test_pairs_bad_args():
    with pytest.raises(ValueError, match="max_pairs_per_prompt=0"):
        build_pairs(["a"], [1], max_pairs_per_prompt=0, seed=0)
    with pytest.raises(ValueError, match="2 prompt ids but 1 rewards"):
        build_pairs(["a", "a"], [1], max_pairs_per_prompt=1, seed=0)


def test_dpo_nll_on_hand_numbers():
    # §4.10's long chosen (312 tokens, rollout 1 of the worked example), α = 1:
    # softplus(-0.92) = 0.3354138; NLL = 182.4 / 312 = 0.5846154; sum 0.9200292.
    from cotflow.algorithms.dpo import dpo_nll_loss

    chosen, rejected = _t(-182.4).requires_grad_(True), _t(-95.1).requires_grad_(True)
    loss, z, nll = dpo_nll_loss(chosen, rejected, _t(-190.0), _t(-93.5), _t(312.0),
                                beta=0.1, nll_coef=1.0)
    assert z.item() == pytest.approx(0.92, abs=1e-9)
    assert nll.item() == pytest.approx(0.5846154, abs=1e-7)
    assert loss.item() == pytest.approx(0.9200292, abs=1e-7)
    loss.backward()
    # ∂L/∂log π(y_w) = -β·σ(-z) - α/|y_w| = -0.0284958 - 0.0032051; y_l: +β·σ(-z)
    assert chosen.grad.item() == pytest.approx(-0.0317009, abs=1e-7)
    assert rejected.grad.item() == pytest.approx(0.0284958, abs=1e-7)


def test_dpo_nll_at_zero_is_plain_dpo_exactly():
    from cotflow.algorithms.dpo import dpo_nll_loss

    args = (_t(-10.0, -182.4), _t(-12.0, -95.1), _t(-11.0, -190.0), _t(-11.0, -93.5))
    plain, z = dpo_loss(*args, beta=0.1)
    with_nll, z2, _ = dpo_nll_loss(*args, _t(5.0, 312.0), beta=0.1, nll_coef=0.0)
    assert with_nll.item() == plain.item() and torch.equal(z, z2)
    with pytest.raises(ValueError, match="nll_coef"):
        dpo_nll_loss(*args, _t(5.0, 312.0), beta=0.1, nll_coef=-1.0)
    with pytest.raises(ValueError, match="chosen_tokens"):
        dpo_nll_loss(*args, _t(0.0, 312.0), beta=0.1, nll_coef=1.0)

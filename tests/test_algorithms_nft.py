"""NFT loss on the spec's worked example and its GRPO equivalence (specs/algorithms-a.md §4.2,
§4.3, §4.8)."""

import math

import pytest
import torch

from cotflow.algorithms.advantages import grouped_advantages
from cotflow.algorithms.nft import (
    clamp_ste,
    nft_reduce,
    nft_token_loss,
    prompt_weight,
    r_hat_of,
)

REF = dict(neg_weight=1.0, clamp_positive=0.0, clamp_negative=1.0)


def _token(r_hat, correct, ratio, normalize):
    """ℓ and ∂ℓ/∂log π for one token with π_old = 1 and π_θ/π_old = ratio."""
    lp = torch.tensor([[math.log(ratio)]], dtype=torch.float64, requires_grad=True)
    loss = nft_token_loss(lp, torch.zeros(1, 1, dtype=torch.float64),
                          torch.tensor([float(correct)]), torch.tensor([r_hat]),
                          normalize=normalize, **REF)
    loss.sum().backward()
    return loss.item(), lp.grad.item()


# §4.8: (r̂, correct, R, ℓ with ω = 1 - r̂, ∂ℓ/∂log π for ω = 1 - r̂, and for ω = √((1-r̂)/r̂))
TABLE = [
    (0.75, 1, 1.0, 0.0, -0.250, -0.577350),
    (0.75, 1, 0.8, 0.055786, -0.250, -0.577350),
    (0.75, 1, 1.2, -0.045580, -0.250, -0.577350),
    (0.75, 0, 1.0, 0.0, 0.750, 1.732051),
    (0.75, 0, 0.8, -0.117501, 0.375, 0.866025),  # proxy 1.6
    (0.75, 0, 1.2, 0.0, 0.900, 2.078461),  # proxy 0.4 -> clamped to 1
    (0.75, 0, 1.4, 0.0, 1.050, 2.424871),  # proxy -0.2 -> clamped to 1
    (0.25, 1, 1.0, 0.0, -0.750, -1.732051),
    (0.25, 0, 1.0, 0.0, 0.250, 0.577350),
    (0.25, 0, 0.8, -0.048404, 0.1875, 0.433013),  # proxy 1.0667
]


@pytest.mark.parametrize(("r_hat", "correct", "ratio", "loss", "grad1", "grad2"), TABLE)
def test_worked_example(r_hat, correct, ratio, loss, grad1, grad2):
    value1, g1 = _token(r_hat, correct, ratio, normalize=1)
    value2, g2 = _token(r_hat, correct, ratio, normalize=2)
    assert value1 == pytest.approx(loss, abs=1e-6)
    assert g1 == pytest.approx(grad1, abs=1e-6)
    assert g2 == pytest.approx(grad2, abs=1e-6)
    # ω only rescales: ℓ(ω=2) = ℓ(ω=1) · √((1-r̂)/r̂) / (1 - r̂)
    assert value2 == pytest.approx(value1 / math.sqrt(r_hat * (1 - r_hat)), abs=1e-9)


def test_unclamped_negative_gradient_would_differ():
    # §4.8 check: P1 negative at R = 1.2 without the clamp, ∂ℓ/∂R = 0.25·3/0.4 = 1.875
    lp = torch.tensor([[math.log(1.2)]], dtype=torch.float64, requires_grad=True)
    loss = nft_token_loss(lp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([0.0]),
                          torch.tensor([0.75]), normalize=1, neg_weight=1.0,
                          clamp_positive=0.0, clamp_negative=0.01)
    loss.sum().backward()
    assert lp.grad.item() / 1.2 == pytest.approx(1.875)


def test_clamp_ste():
    x = torch.tensor([0.4, 1.6], requires_grad=True)
    y = clamp_ste(x, 1.0)
    assert y.tolist() == [1.0, pytest.approx(1.6)]
    (y * torch.tensor([2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [2.0, 3.0]  # gradient passed straight through, clamped or not


def test_prompt_weight_modes():
    r = torch.tensor([0.75, 0.25])
    assert prompt_weight(r, 0).tolist() == [1.0, 1.0]
    assert prompt_weight(r, 1).tolist() == [0.25, 0.75]
    assert prompt_weight(r, 2).tolist() == pytest.approx([0.5773503, 1.7320508])
    with pytest.raises(ValueError, match="normalize=3"):
        prompt_weight(r, 3)


def test_r_hat_of():
    assert r_hat_of(0.75) == 0.75
    assert r_hat_of(1 / 64) == 0.02
    assert r_hat_of(63 / 64) == 0.98
    assert r_hat_of(torch.tensor([0.01, 0.5, 0.99])).tolist() == pytest.approx([0.02, 0.5, 0.98])
    for bad in (0.0, 1.0, torch.tensor([0.5, 0.0])):
        with pytest.raises(ValueError, match="drop all-correct and all-wrong groups"):
            r_hat_of(bad)


def test_loss_rejects_degenerate_groups_and_bad_args():
    lp = torch.zeros(2, 3)
    args = (lp, lp, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="fraction correct"):
        nft_token_loss(*args, torch.tensor([1.0, 0.5]), normalize=1, **REF)
    with pytest.raises(ValueError, match="correct must hold only 0 and 1"):
        nft_token_loss(lp, lp, torch.tensor([2.0, 0.0]), torch.tensor([0.5, 0.5]),
                       normalize=1, **REF)
    with pytest.raises(ValueError, match="neg_weight"):
        nft_token_loss(*args, torch.tensor([0.5, 0.5]), normalize=1, neg_weight=-1.0,
                       clamp_positive=0.0, clamp_negative=1.0)
    with pytest.raises(ValueError, match="r_hat"):
        nft_token_loss(*args, torch.tensor([0.5]), normalize=1, **REF)


def test_rft_ignores_negatives():
    lp = torch.tensor([[-0.2, -0.3], [-0.1, -0.9]], requires_grad=True)
    loss = nft_token_loss(lp, lp.detach() + 0.1, torch.tensor([1.0, 0.0]),
                          torch.tensor([0.5, 0.5]), normalize=0, neg_weight=0.0,
                          clamp_positive=0.0, clamp_negative=1.0)
    assert loss[1].tolist() == [0.0, 0.0]
    assert loss[0].tolist() == pytest.approx([0.1, 0.1])  # -log R with log R = -0.1


def test_ratio_cap_stops_gradient():
    lp = torch.tensor([[12.0]], requires_grad=True)
    loss = nft_token_loss(lp, torch.zeros(1, 1), torch.tensor([1.0]), torch.tensor([0.5]),
                          normalize=0, **REF)
    assert loss.item() == pytest.approx(-10.0)
    loss.sum().backward()
    assert lp.grad.item() == 0.0


def test_nft_reduce():
    per_token = torch.tensor([[1.0, 2.0, float("nan")], [3.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert nft_reduce(per_token, mask).item() == pytest.approx(6.0 / 1000)
    assert nft_reduce(per_token, mask, normalizer=3.0).item() == pytest.approx(2.0)


@pytest.mark.parametrize(("normalize", "std"), [(1, "none"), (2, "population"), (0, None)])
def test_on_policy_gradient_equals_policy_gradient(normalize, std):
    """§4.3: at R = 1, ∇ NFT = ∇ Σ m·(-A·log π) / 1000 with A the matching group advantage."""
    g = torch.Generator().manual_seed(3)
    correct = [1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 0]  # three groups of four: 0.75, 0.25, 0.5
    groups = [k // 4 for k in range(12)]
    frac = {k: sum(correct[4 * k: 4 * k + 4]) / 4 for k in range(3)}
    r_hat = torch.tensor([frac[k] for k in groups], dtype=torch.float64)
    if std is None:  # ω = 1: A = (c - r̂) / (1 - r̂)
        adv = [(c - r) / (1 - r) for c, r in zip(correct, r_hat.tolist(), strict=True)]
    else:
        adv = grouped_advantages(correct, groups, std=std, eps=0.0)
    mask = (torch.rand(12, 6, generator=g) > 0.3).double()
    base = torch.randn(12, 6, generator=g, dtype=torch.float64) - 2.0

    lp_nft = base.clone().requires_grad_(True)
    per_token = nft_token_loss(lp_nft, base.clone(), torch.tensor(correct, dtype=torch.float64),
                               r_hat, normalize=normalize, **REF)
    nft_reduce(per_token, mask).backward()

    lp_pg = base.clone().requires_grad_(True)
    pg = (-(torch.tensor(adv, dtype=torch.float64)[:, None] * lp_pg) * mask).sum()
    pg.backward()

    assert torch.allclose(lp_nft.grad * 1000.0, lp_pg.grad, atol=1e-12)
    assert lp_pg.grad.abs().sum() > 0

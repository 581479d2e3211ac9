"""Critique-GRPO on the spec's worked example (specs/algorithms-a.md §3.3, §3.5, §3.9)."""

import math

import pytest
import torch

from cotflow.algorithms.advantages import grouped_advantages
from cotflow.algorithms.critique import critique_grpo_token_loss, select_refinement, shaping

# §3.9: n = 4 = 1 refinement (slot 0) + 3 initial, three prompts.
GROUPS = {"P1": [1, 1, 0, 0], "P2": [1, 0, 0, 0], "P3": [0, 0, 0, 0]}
STD = {"P1": [0.866024, 0.866024, -0.866024, -0.866024],
       "P2": [1.499997, -0.499999, -0.499999, -0.499999], "P3": [0.0] * 4}
NO_STD = {"P1": [0.5, 0.5, -0.5, -0.5], "P2": [0.75, -0.25, -0.25, -0.25], "P3": [0.0] * 4}


def _advantages(std: str) -> dict[str, list[float]]:
    rewards = [r for g in GROUPS.values() for r in g]
    ids = [p for p, g in GROUPS.items() for _ in g]
    adv = grouped_advantages(rewards, ids, std=std, eps=1e-6)
    return {p: adv[4 * i:4 * i + 4] for i, p in enumerate(GROUPS)}


@pytest.mark.parametrize(("std", "expected"), [("sample", STD), ("none", NO_STD)])
def test_mixed_group_advantages_and_the_std_switch(std, expected):
    got = _advantages(std)
    for p in GROUPS:
        assert got[p] == pytest.approx(expected[p], abs=1e-6), p


def test_selection_first_correct_else_first():
    assert select_refinement([False, True, True]) == 1
    assert select_refinement([False, False]) == 0  # P3: no correct refinement
    assert select_refinement([True]) == 0
    with pytest.raises(ValueError):
        select_refinement([])


def _token(p: float, advantage: float, off: bool, old_p: float | None = None):
    """ℓ and ∂ℓ/∂log π of one token with π_θ = p (π_old = old_p, default p)."""
    lp = torch.tensor([[math.log(p)]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[math.log(old_p or p)]], dtype=torch.float64)
    loss = critique_grpo_token_loss(lp, old, torch.tensor([advantage], dtype=torch.float64),
                                    torch.tensor([float(off)]))
    loss.sum().backward()
    return loss.item(), lp.grad.item()


A_REF = 1.499997  # P2's refinement, std-normalised as shipped


@pytest.mark.parametrize(("p", "loss", "grad"), [
    (0.1, -0.75, -0.375),  # f = 0.5, slope γp/(p+γ)² = 0.25
    (0.9, -1.35, -0.135),  # f = 0.9, slope 0.09
])
def test_refinement_tokens(p, loss, grad):
    value, g = _token(p, A_REF, off=True)
    assert value == pytest.approx(loss * A_REF / 1.5, abs=1e-9)
    assert g == pytest.approx(grad * A_REF / 1.5, abs=1e-9)
    assert value == pytest.approx(loss, abs=1e-5) and g == pytest.approx(grad, abs=1e-5)


def test_refinement_has_no_behaviour_denominator():
    # The same token under a different π_old: the shaped term reads π_θ only.
    assert _token(0.1, A_REF, off=True, old_p=0.9) == _token(0.1, A_REF, off=True, old_p=0.1)


def test_initial_token_is_unclipped_ratio():
    # §3.9: initial (wrong) token at ρ = 1, A = −0.5: ℓ = +0.5, ∂ℓ/∂log π = +0.5.
    assert _token(0.3, -0.5, off=False) == pytest.approx((0.5, 0.5), abs=1e-12)
    # No clip: at ρ = 2 the loss keeps growing (PPO with ε = 0.2 would stop at 1.2).
    value, g = _token(0.6, -0.5, off=False, old_p=0.3)
    assert (value, g) == pytest.approx((1.0, 1.0), abs=1e-12)


def test_clip_is_configurable():
    lp = torch.tensor([[math.log(0.6)]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[math.log(0.3)]], dtype=torch.float64)
    loss = critique_grpo_token_loss(lp, old, torch.tensor([1.0], dtype=torch.float64),
                                    torch.tensor([0.0]), eps_low=0.2, eps_high=0.2)
    loss.sum().backward()
    assert loss.item() == pytest.approx(-1.2) and lp.grad.item() == 0.0
    with pytest.raises(ValueError, match="both"):
        critique_grpo_token_loss(lp, old, torch.tensor([1.0]), torch.tensor([0.0]), eps_low=0.2)


def test_shaping_weights_of_the_spec():
    p = torch.tensor([0.1, 0.9, 0.5, 0.01], dtype=torch.float64, requires_grad=True)
    shaping(p).sum().backward()
    slope = (p.grad * p).tolist()  # ∂f/∂log p = p ∂f/∂p
    assert slope == pytest.approx([0.25, 0.09, 0.1388889, 0.0826446], abs=1e-6)
    with pytest.raises(ValueError):
        shaping(p, 0.0)


def _settings(**changes):
    from cotflow.recipes.critique_grpo import Settings

    base = dict(kind="critique-grpo", critique="indicative_gt", n_prefix=1, shaping_gamma=0.1,
                advantage_std="sample", std_eps=1e-6, eps_low=None, eps_high=None,
                loss_agg="seq-mean-token-sum-norm", loss_constant=6144.0, entropy_coef=1e-3,
                kl_coef=0.0, reference="prev")
    return Settings(**{**base, **changes})


def test_objective_on_p2_value_and_gradient():
    """§3.9, P2: Σℓ / L over the step's sequences (L = 6144), minus 0.001 × the token-mean
    entropy; one token per response, π_θ = π_old."""
    from cotflow.recipes.base import StepSize, TokenBatch
    from cotflow.recipes.critique_grpo import objective

    p = torch.tensor([0.1, 0.3, 0.3, 0.3], dtype=torch.float64)
    logits = torch.stack([p.log(), (1 - p).log()], dim=-1).unsqueeze(1).requires_grad_(True)
    lp = p.log().unsqueeze(1).clone().requires_grad_(True)
    adv = torch.tensor(STD["P2"], dtype=torch.float64)
    tb = TokenBatch(logprobs=lp, logits=logits, mask=torch.ones(4, 1), advantages=adv,
                    step=StepSize(tokens=4, sequences=4, units=4), old_logprobs=lp.detach(),
                    extras={"off_policy": torch.tensor([1.0, 0.0, 0.0, 0.0])})
    loss, _ = objective(_settings(), 6144.0)(tb)
    token_losses = [-1.499997 * 0.5] + [0.499999] * 3
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean().item()
    # (entropy in float32, as the trainer computes it)
    assert loss.item() == pytest.approx(sum(token_losses) / (6144 * 4) - 1e-3 * entropy,
                                        abs=1e-9)
    loss.backward()
    assert lp.grad[:, 0].tolist() == pytest.approx(
        [-1.499997 * 0.25 / (6144 * 4)] + [0.499999 / (6144 * 4)] * 3, abs=1e-12)


def _rollout(pid, idx, correct, refinement=False):
    from cotflow.rollouts import Rollout

    return Rollout(pid, idx, "q\n", "a", (1, 5), (6, 2), True, float(correct), None,
                   refinement=refinement)


def test_plan_overwrites_the_first_slot_and_weights_the_refinement():
    """§3.9's groups: 4 initial responses (the first overwritten) + the selected refinement."""
    from cotflow.recipes.base import Inputs
    from cotflow.recipes.critique_grpo import plan

    rows = []
    for pid, (ref, *initial) in GROUPS.items():
        # slot 0's initial response is the one the refinement replaces (its reward: anything)
        rows += [_rollout(pid, j, r) for j, r in enumerate([1 - ref, *initial])]
        rows.append(_rollout(pid, 0, ref, refinement=True))
    for std, expected in (("sample", STD), ("none", NO_STD)):
        out = plan(_settings(advantage_std=std), Inputs(rows, {}, 48, False, None))
        assert [e.extras["off_policy"] for e in out.examples] == [1.0, 0.0, 0.0, 0.0] * 3
        got = [e.advantage for e in out.examples]
        assert got == pytest.approx([a for p in GROUPS for a in expected[p]], abs=1e-6)
    assert out.stats["refinements_trained"] == 3
    assert out.stats["zero_variance_share"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="n_prefix 4 leaves no on-policy response"):
        plan(_settings(n_prefix=4), Inputs(rows, {}, 48, False, None))

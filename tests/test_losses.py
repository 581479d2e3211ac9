"""RAFT / RAFT++ losses and pass@k on hand-computed numbers (specs/algorithms-b.md §5.6)."""

import math

import pytest
import torch

from cotflow.algorithms.losses import clipped_surrogate, raft_loss, token_mean
from cotflow.algorithms.metrics import pass_at_k

# One prompt, n = 4, rewards [+1, -1, +1, -1], lengths [3, 2, 4, 3] (spec §5.6).
LOGPROBS = torch.tensor([
    [-0.5, -0.2, -0.3, 0.0],
    [-0.7, -0.9, 0.0, 0.0],
    [-0.1, -0.4, -0.2, -0.3],
    [-0.6, -0.6, -0.6, 0.0],
])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.float)
ADV = torch.tensor([1.0, 0.0, 1.0, 0.0])


def test_raft_token_mean_counts_every_token():
    # -(sum of accepted log-probs) / all 12 response tokens = 2.0 / 12
    assert raft_loss(LOGPROBS, ADV, MASK).item() == pytest.approx(0.1666667, abs=1e-7)


def test_raft_on_accepted_only_is_sft():
    # Only the two correct responses: 2.0 / 7 accepted tokens.
    keep = ADV > 0
    assert raft_loss(LOGPROBS[keep], ADV[keep], MASK[keep]).item() == pytest.approx(
        0.2857143, abs=1e-7)


def test_token_mean_of_empty_mask_is_zero():
    assert token_mean(torch.ones(2, 3), torch.zeros(2, 3)).item() == 0.0


def test_raftpp_on_policy_equals_raft_value_and_gradient():
    lp1 = LOGPROBS.clone().requires_grad_(True)
    lp2 = LOGPROBS.clone().requires_grad_(True)
    loss_pp, clip = clipped_surrogate(lp1, LOGPROBS.clone(), ADV, MASK, eps_low=0.2, eps_high=0.2)
    loss_raft = raft_loss(lp2, ADV, MASK)
    # rho = 1: -A * rho is -1 on each of the 7 accepted tokens, over 12 tokens; its gradient
    # -A * rho * d(logp) equals RAFT's -A * d(logp) (spec §5.6: same step at rho = 1).
    assert loss_pp.item() == pytest.approx(-7.0 / 12, abs=1e-7)
    loss_pp.backward()
    loss_raft.backward()
    assert torch.allclose(lp1.grad, lp2.grad)
    assert clip.item() == 0.0


def test_raftpp_clips_ratio_above_one_plus_eps():
    # A correct-response token with rho = 1.3 is clipped at 1.2 and has no gradient.
    old = torch.tensor([[0.0]])
    lp = torch.tensor([[math.log(1.3)]], requires_grad=True)
    loss, clip = clipped_surrogate(lp, old, torch.tensor([1.0]), torch.ones(1, 1),
                                   eps_low=0.2, eps_high=0.2)
    assert loss.item() == pytest.approx(-1.2)
    loss.backward()
    assert lp.grad.item() == 0.0
    assert clip.item() == 1.0


def test_clip_higher_vector():
    # specs/algorithms-b.md §7 item 5: rho = 1.25, A = 1 -> 1.20 (eps 0.2) vs 1.25 (eps_high 0.28)
    lp, old = torch.tensor([[math.log(1.25)]]), torch.tensor([[0.0]])
    a, m = torch.tensor([1.0]), torch.ones(1, 1)
    low, _ = clipped_surrogate(lp, old, a, m, eps_low=0.2, eps_high=0.2)
    high, _ = clipped_surrogate(lp, old, a, m, eps_low=0.2, eps_high=0.28)
    assert -low.item() == pytest.approx(1.20)
    assert -high.item() == pytest.approx(1.25)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 1, 0.25),  # c/n
        (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2)
        (5, 0, 3, 0.0),
        (5, 3, 3, 1.0),  # n - c < k: some draw must be correct
        (10, 3, 4, 1 - 35 / 210),  # 1 - C(7,4)/C(10,4)
    ],
)
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_impossible():
    with pytest.raises(ValueError, match="exceeds"):
        pass_at_k(2, 1, 3)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)

"""SPO's segment advantages, tree values, whitening and loss on the hand-computed numbers of
specs/algorithms-b.md §2.8 (and hand numbers of this file's own where the spec has none)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from cotflow.algorithms.spo import (
    ReplayBuffer,
    TreeNode,
    chain_advantages,
    cutpoints,
    masked_whiten,
    probability_mask,
    segment_boundaries,
    spo_loss,
    spo_reward,
    tree_edges,
    tree_value,
)

P = [0.95, 0.60, 0.99, 0.80, 0.97, 0.50]


def _close(xs, ys, tol=1e-4):
    assert len(xs) == len(ys) and all(abs(x - y) < tol for x, y in zip(xs, ys, strict=True)), (
        xs, ys)


def test_chain_interval_one():
    assert cutpoints(P) == [1, 3, 5]
    assert segment_boundaries(P, 1) == [1, 3, 5]
    raw, masked = chain_advantages(P, {1: 4 / 9, 3: 6 / 9, 5: 3 / 9}, 0.0, m=1)
    _close(raw, [0, 0.2222, 0.2222, -0.3333, -0.3333, -0.3333])
    _close(masked, [0, 0.2222, 0, -0.3333, 0, -0.3333])


def test_chain_interval_two_low_token_inside_a_segment_keeps_its_advantage():
    assert segment_boundaries(P, 2) == [1, 5]
    raw, masked = chain_advantages(P, {1: 4 / 9, 5: 3 / 9}, 0.0, m=2)
    _close(raw, [0, -0.1111, -0.1111, -0.1111, -0.1111, -0.3333])
    _close(masked, [0, -0.1111, 0, -0.1111, 0, -0.3333])


def test_chain_first_token_low_probability_starts_at_the_prompt_value():
    p = [0.70, 0.95, 0.60, 0.99, 0.80, 0.97]
    assert segment_boundaries(p, 1) == [0, 2, 4]
    raw, masked = chain_advantages(p, {0: 5 / 9, 2: 3 / 9, 4: 7 / 9}, 1.0, m=1)
    _close(raw, [-0.2222, -0.2222, 0.4444, 0.4444, 0.2222, 0.2222])
    _close(masked, [-0.2222, 0, 0.4444, 0, 0.2222, 0])


def test_chain_without_cutpoints_learns_nothing_and_missing_values_are_named():
    assert chain_advantages([0.95, 0.99], {}, 1.0) == ([0.0, 0.0], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"boundary tokens \[3\]"):
        chain_advantages(P, {1: 0.5, 5: 0.5}, 0.0, m=1)
    with pytest.raises(ValueError, match="m=0"):
        segment_boundaries(P, 0)


def test_default_interval_five():
    p = [0.5] * 12  # every token a cutpoint: boundaries 0, 5, 10
    assert segment_boundaries(p) == [0, 5, 10]


def test_reward_rule():
    assert spo_reward(True, True, 1) == 1.0
    assert spo_reward(True, False, 1) == 0.0  # cut off: no reward
    assert spo_reward(False, True, 1) == 0.0
    assert spo_reward(True, True, 2) == -2.0


def test_tree_values_and_edges():
    def leaves(*rs):
        return [TreeNode((i,), r) for i, r in enumerate(rs)]

    c1 = TreeNode((10,), children=leaves(1, 0, 1))
    c2 = TreeNode((20,), children=leaves(1, 1, 1))
    c3 = TreeNode((30,), children=leaves(0, 0, 0))
    root = TreeNode(children=[c1, c2, c3])
    assert tree_value(root) == pytest.approx(5 / 9)
    edges = tree_edges(root)
    assert len(edges) == 6
    depth1 = [(e.segment, e.advantage) for e in edges if e.depth == 1]
    assert [s for s, _ in depth1] == [(10,), (20,), (30,)]
    _close([a for _, a in depth1], [1 / 9, 4 / 9, -5 / 9])
    depth2 = [e for e in edges if e.depth == 2]
    assert all(e.context == (10,) for e in depth2)  # c2's and c3's children are dropped
    _close([e.advantage for e in depth2], [1 / 3, -2 / 3, 1 / 3])


def test_tree_value_is_the_mean_of_children_not_of_leaves():
    # One child finished early (a leaf of reward 1), the other has three leaves of 0:
    # mean of children 0.5, mean of leaves 0.25.
    root = TreeNode(children=[TreeNode((1,), 1.0),
                              TreeNode((2,), children=[TreeNode((3,), 0.0)] * 3)])
    assert tree_value(root) == 0.5
    with pytest.raises(ValueError, match="no reward"):
        tree_value(TreeNode())


def test_masked_whiten_uses_the_unbiased_variance_of_masked_tokens():
    v = torch.tensor([[1.0, 2.0, 100.0], [3.0, 7.0, 0.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = masked_whiten(v, m)
    # masked values 1, 2, 3: mean 2, unbiased variance 1
    assert torch.allclose(out, torch.tensor([[-1.0, 0.0, 100.0], [1.0, 7.0, 0.0]]), atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        masked_whiten(v, torch.tensor([[1, 0, 0], [0, 0, 0]]))


def test_probability_mask_excludes_p_of_exactly_rho():
    old = torch.log(torch.tensor([[0.5, 0.9, 0.95, 0.2]]))
    m = torch.tensor([[1, 1, 1, 0]])
    assert probability_mask(old, m).tolist() == [[True, False, False, False]]


def test_spo_loss_on_hand_numbers():
    # Two sequences, three tokens; p_old = [0.5, 0.95, 0.8] and [0.6, 0.5, 0.99].
    old = torch.log(torch.tensor([[0.5, 0.95, 0.8], [0.6, 0.5, 0.99]]))
    lp = old + torch.tensor([[0.1, 0.3, -0.5], [0.0, 0.4, 0.2]])
    ref = old.clone()
    adv = torch.tensor([[1.0, 1.0, -1.0], [2.0, -1.0, 5.0]])
    mask = torch.ones(2, 3)
    out = spo_loss(lp, old, ref, adv, mask)
    # masked tokens: (0,0) ratio e^0.1, A 1; (0,2) e^-0.5, A -1; (1,0) 1, A 2; (1,1) e^0.4, A -1
    r = [math.exp(0.1), math.exp(-0.5), 1.0, math.exp(0.4)]
    terms = [max(-1 * r[0], -1 * min(max(r[0], 0.8), 1.2)),
             max(1 * r[1], 1 * min(max(r[1], 0.8), 1.2)),
             max(-2 * r[2], -2 * 1.0),
             max(1 * r[3], 1 * min(max(r[3], 0.8), 1.2))]
    pg = sum(terms) / 4
    k3 = [math.exp(-d) + d - 1 for d in (0.1, -0.5, 0.0, 0.4)]
    kl = 1e-4 * sum(k3) / 2
    assert out.pg.item() == pytest.approx(pg, rel=1e-6)
    assert out.kl.item() == pytest.approx(kl, rel=1e-5)
    assert out.loss.item() == pytest.approx(pg + kl, rel=1e-6)
    assert out.mean_ratio == pytest.approx(sum(r) / 4, rel=1e-6) and not out.skipped


def test_spo_loss_gradient_reaches_only_masked_tokens_and_large_ratios_skip():
    old = torch.log(torch.tensor([[0.5, 0.95]]))
    lp = old.clone().requires_grad_(True)
    out = spo_loss(lp, old, old, torch.tensor([[1.0, 1.0]]), torch.ones(1, 2))
    out.loss.backward()
    # d/dlp of -A·ρ at ρ = 1 is -1 on the masked token; the p = 0.95 token gets nothing.
    assert lp.grad.tolist() == [[-1.0, 0.0]]
    far = spo_loss(old + 3.0, old, old, torch.tensor([[1.0, 1.0]]), torch.ones(1, 2))
    assert far.skipped and far.loss.item() == 0.0 and far.mean_ratio == pytest.approx(
        math.exp(3.0), rel=1e-5)


def test_replay_buffer_keeps_eight_iterations_and_draws_at_most_k_per_question():
    buf = ReplayBuffer(max_age=8, per_question=2)
    buf.add("q", 1, ["old1", "old2"])
    buf.add("q", 5, ["a", "b", "c"])
    rng = random.Random(0)
    first = buf.draw(9, rng)["q"]  # iteration 1's edges are 8 old: gone
    assert len(first) == 2 and set(first) <= {"a", "b", "c"}
    second = buf.draw(10, rng)["q"]
    assert second == sorted({"a", "b", "c"} - set(first))
    assert buf.draw(11, rng) == {}


def test_spo_tree_recipe_on_the_spec_tree():
    """The tree of §2.8 as tree.parquet rows and graded leaves: six edge examples, their
    contexts the parent's full text, A on every token."""
    from cotflow.recipes.base import Inputs
    from cotflow.recipes.spo_tree import Settings, plan
    from cotflow.rollouts import Rollout

    table = {"prompt_id": [], "node": [], "parent": [], "depth": [], "token_ids": [],
             "leaf": []}
    rollouts, leaf = [], 0
    for c, rewards in enumerate([[1, 0, 1], [1, 1, 1], [0, 0, 0]]):
        for col, v in zip(table, ["q", c, -1, 0, [10 + c, 11 + c], -1], strict=True):
            table[col].append(v)
        for j, r in enumerate(rewards):
            node = 3 + 3 * c + j
            for col, v in zip(table, ["q", node, c, 1, [20 + node], leaf], strict=True):
                table[col].append(v)
            rollouts.append(Rollout("q", leaf, "p", f"\\boxed{{{r}}}", (1, 2), (20 + node, 2),
                                    True, float(r), str(r)))
            leaf += 1
    settings = Settings(kind="spo-tree", clip_eps=0.2, kl_coef=1e-4, reference="base",
                        whiten=True, max_edges_per_question=32)

    class Seg:
        rho = 0.9

    out = plan(settings, Inputs(rollouts, {}, 48, True, None, tables={"tree": table},
                                segments=Seg()))
    assert len(out.examples) == 6 and out.stats["edges_nonzero"] == 6
    by_segment = {ex.completion_ids: ex for ex in out.examples}
    _close([by_segment[(10, 11)].extras["spo_advantages"][0],
            by_segment[(11, 12)].extras["spo_advantages"][0],
            by_segment[(12, 13)].extras["spo_advantages"][0]], [1 / 9, 4 / 9, -5 / 9])
    assert by_segment[(10, 11)].extras["spo_advantages"] == [pytest.approx(1 / 9)] * 2
    # Depth-2 edges under c1: the prompt then c1's segment as context.
    under_c1 = [ex for ex in out.examples if ex.prompt_ids == (1, 2, 10, 11)]
    _close([ex.extras["spo_advantages"][0] for ex in under_c1], [1 / 3, -2 / 3, 1 / 3])
    settings_2 = settings.model_copy(update={"max_edges_per_question": 2})
    capped = plan(settings_2, Inputs(rollouts, {}, 48, True, None, tables={"tree": table},
                                     segments=Seg()))
    assert len(capped.examples) == 2

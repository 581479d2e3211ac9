"""SPO, Segment Policy Optimization (Guo et al., arXiv 2505.23564): segment advantages from
Monte Carlo values, and the probability-masked PPO loss (specs/algorithms-b.md §2).

SPO-chain (§2.3): the response's low-probability tokens (p_old < ρ) are cutpoints; every
m-th one starts a segment; each segment's advantage is the MC value at its end minus the MC
value at its start (the last one ends at the response's own reward). SPO-tree (§2.4): values
are means over a node's children, every edge is an example with A = V(child) − V(parent).
Pure: lists and torch tensors in, numbers out; the MC sampling is the sample stage's work.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from cotflow.algorithms.losses import apply_mask, k3_kl

RHO = 0.9  # hard-coded in the paper's code in four places; one parameter here (§2.9)
CUTPOINT_INTERVAL = 5  # m, the code's default ("int5")
LOG_RATIO_CLAMP = 10.0
RATIO_SKIP = 10.0  # a micro-batch whose masked mean ratio exceeds this trains nothing
KL_COEF = 1.0e-4
WHITEN_EPS = 1.0e-8


def cutpoints(p: Sequence[float], rho: float = RHO) -> list[int]:
    """Positions of the low-probability tokens, p_t < ρ, in order."""
    return [t for t, pt in enumerate(p) if pt < rho]


def segment_boundaries(p: Sequence[float], m: int = CUTPOINT_INTERVAL,
                       rho: float = RHO) -> list[int]:
    """Every m-th cutpoint, from the first: each starts a segment (§2.3 step 4)."""
    if m < 1:
        raise ValueError(f"cutpoint interval m={m} must be >= 1")
    return cutpoints(p, rho)[::m]


def chain_advantages(
    p: Sequence[float], values_before: Mapping[int, float], reward: float, *,
    m: int = CUTPOINT_INTERVAL, rho: float = RHO,
) -> tuple[list[float], list[float]]:
    """SPO-chain advantages of one response's tokens, before whitening.

    Args:
        p: π_old of each response token (temperature-scaled, as sampled).
        values_before: MC value of the state before each boundary token b (b = 0: the
            prompt's value); keys are `segment_boundaries(p, m, rho)`.
        reward: R(y), the response's own reward (the last segment's end value).
    Returns:
        (raw, masked): raw per-token segment advantages, and the same with tokens of
        p > ρ zeroed (the probability mask on advantages, §2.3 step 8).
    """
    bounds = segment_boundaries(p, m, rho)
    missing = [b for b in bounds if b not in values_before]
    if missing:
        raise ValueError(f"no MC value for the states before boundary tokens {missing}")
    raw = [0.0] * len(p)
    if not bounds:
        return raw, list(raw)  # no low-probability token: nothing to learn (only the KL)
    # Tokens before the first boundary keep 0: all have p >= ρ (the code's segment-0 rule).
    for start, end in zip(bounds, [*bounds[1:], len(p)], strict=True):
        v_end = reward if end == len(p) else values_before[end]
        for t in range(start, end):
            raw[t] = v_end - values_before[start]
    masked = [a if pt <= rho else 0.0 for a, pt in zip(raw, p, strict=True)]
    return raw, masked


def spo_reward(correct: bool, finished: bool, markers: int) -> float:
    """The SPO math reward: 1 correct, 0 wrong or unfinished (cut off, no answer), and −2
    for more than one final-answer marker in the text (the code's GSM8K `####` guard)."""
    if markers > 1:
        return -2.0
    return 1.0 if correct and finished else 0.0


def answer_markers(text: str) -> int:
    """Final-answer markers in a completion, for `spo_reward` (the paper's guard counts
    GSM8K's `####`; the built-in task's marker is \\boxed{})."""
    return text.count("\\boxed{") + text.count("####")


def probability_mask(old_logprobs: torch.Tensor, mask: torch.Tensor,
                     rho: float = RHO) -> torch.Tensor:
    """Response tokens whose behaviour probability is below ρ (the trainer's mask, §2.3
    step 9: p exactly ρ is excluded here though it is no cutpoint; harmless, as the code)."""
    return mask.bool() & (old_logprobs.exp() < rho)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = WHITEN_EPS
                  ) -> torch.Tensor:
    """(v − μ)/sqrt(σ² + eps) with μ and the unbiased σ² over masked positions only.
    Unmasked positions come back unchanged: the loss mask ignores them."""
    m = mask.bool()
    n = int(m.sum())
    if n < 2:
        raise ValueError(f"whitening needs at least 2 masked tokens, got {n}")
    picked = values[m]
    mean = picked.mean()
    var = ((picked - mean) ** 2).sum() / (n - 1)
    return torch.where(m, (values - mean) / torch.sqrt(var + eps), values)


@dataclass(frozen=True)
class SpoLoss:
    loss: torch.Tensor
    pg: torch.Tensor
    kl: torch.Tensor
    mean_ratio: float
    skipped: bool


def spo_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
    advantages: torch.Tensor, mask: torch.Tensor, *, rho: float = RHO, eps: float = 0.2,
    kl_coef: float = KL_COEF, tokens: float | None = None, sequences: float | None = None,
    sample_probs: torch.Tensor | None = None,
) -> SpoLoss:
    """SPO's PPO loss under the probability mask M = response ∧ (p_old < ρ) (§2.3):

        log ρ_t = clamp((ℓ_θ − ℓ_old)·M_t, −10, 10)
        L_pg = Σ M·max(−A ρ, −A clip(ρ, 1−ε, 1+ε)) / Σ M
        L_kl = β · (1/B) Σ_i Σ_t clamp(k3_it · M_it, 0, 1e9)   (k3 to the reference)
        L = L_pg + L_kl, times 0 when the masked mean ratio exceeds 10.

    `advantages` (B, T) are already whitened. `tokens`/`sequences` replace Σ M and B when
    (B, T) is one micro-batch of an optimizer step (then the skip is judged per micro-batch).
    `sample_probs` (B, T), when given, are the probabilities the mask is taken from (the
    sampling temperature's, as the cutpoints); else exp(old_logprobs).
    """
    pmask = (probability_mask(old_logprobs, mask, rho) if sample_probs is None
             else mask.bool() & (sample_probs < rho))
    log_ratio = apply_mask(logprobs - old_logprobs, pmask).clamp(
        -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    per_token = torch.maximum(-advantages * ratio,
                              -advantages * torch.clamp(ratio, 1.0 - eps, 1.0 + eps))
    fm = pmask.to(logprobs.dtype)
    count = float(fm.sum()) if tokens is None else float(tokens)
    pg = apply_mask(per_token, pmask).sum() / max(count, 1.0)
    k3 = apply_mask(k3_kl(logprobs, ref_logprobs), pmask).clamp(0.0, 1e9)
    batch = logprobs.shape[0] if sequences is None else sequences
    kl = kl_coef * k3.sum() / max(float(batch), 1.0)
    mean_ratio = float(apply_mask(ratio.detach(), pmask).sum() / fm.sum().clamp(min=1.0))
    skipped = mean_ratio > RATIO_SKIP
    loss = pg + kl
    return SpoLoss(loss * 0.0 if skipped else loss, pg, kl, mean_ratio, skipped)


# ---- SPO-tree (§2.4) ----


@dataclass
class TreeNode:
    """A segment of a sampled tree: its token ids after the parent's text, and its children
    (none for a leaf, whose `reward` is the full text's reward)."""

    tokens: tuple[int, ...] = ()
    reward: float | None = None
    children: list[TreeNode] = field(default_factory=list)


def nodes_per_tree(branching: Sequence[int]) -> int:
    """Nodes of a full tree, the root aside: 6 + 36 + 216 = 258 for 6-6-6 (§2.4)."""
    total, width = 0, 1
    for b in branching:
        width *= b
        total += width
    return total


def tree_value(node: TreeNode) -> float:
    """V(leaf) = R(leaf); V(n) = mean of the children's values. The code's rule: the mean
    over children, not over descendant leaves, so an early-finished child weighs as much as
    a whole subtree (§2.4)."""
    if not node.children:
        if node.reward is None:
            raise ValueError("a leaf of the tree has no reward")
        return node.reward
    return sum(tree_value(c) for c in node.children) / len(node.children)


@dataclass(frozen=True)
class Edge:
    """One training example of SPO-tree: the parent's full text (as token ids after the
    prompt), the child's segment, and A = V(child) − V(parent)."""

    context: tuple[int, ...]
    segment: tuple[int, ...]
    advantage: float
    depth: int


def tree_edges(root: TreeNode) -> list[Edge]:
    """Every parent→child edge with a non-zero advantage, depth first. The code's flag
    `only_adv_greater_than_zero` keeps negative advantages too: it drops A = 0 only."""
    out: list[Edge] = []

    def visit(node: TreeNode, context: tuple[int, ...], v: float, depth: int) -> None:
        for child in node.children:
            vc = tree_value(child)
            if vc != v:
                out.append(Edge(context, child.tokens, vc - v, depth + 1))
            visit(child, context + child.tokens, vc, depth + 1)

    visit(root, (), tree_value(root), 0)
    return out


@dataclass
class ReplayBuffer:
    """SPO-tree's edge replay (§2.4, "on_policy"): edges are tagged with the iteration that
    made them and kept for `max_age` iterations (that one included); each iteration a
    question gives at most `per_question` edges, drawn at random and removed, so unchosen
    edges can be drawn later. Items are opaque (edges with their behaviour log-probs)."""

    max_age: int = 8
    per_question: int = 32
    items: dict[str, list[tuple[int, object]]] = field(default_factory=dict)

    def add(self, question: str, iteration: int, edges: Sequence[object]) -> None:
        self.items.setdefault(question, []).extend((iteration, e) for e in edges)

    def draw(self, iteration: int, rng: random.Random) -> dict[str, list[object]]:
        out: dict[str, list[object]] = {}
        for question, tagged in list(self.items.items()):
            fresh = [(it, e) for it, e in tagged if iteration - it < self.max_age]
            picked = set(rng.sample(range(len(fresh)), min(self.per_question, len(fresh))))
            out[question] = [fresh[i][1] for i in sorted(picked)]
            left = [fresh[i] for i in range(len(fresh)) if i not in picked]
            if left:
                self.items[question] = left
            else:
                del self.items[question]
        return out

"""SEED-GRPO: GRPO advantages scaled down by the semantic entropy of the group (pure python).

Chen et al., "SEED-GRPO: Semantic Entropy Enhanced GRPO for Uncertainty-Aware Policy
Optimization", arXiv 2505.12346; specs/algorithms-a.md §2 ("recommended implementation"):
Â_i = (r_i - r̄) · f(α · SE(q) / ln G), with the group's answers clustered by meaning, and
semantic entropy after Farquhar et al., Nature 2024 / Kuhn et al., arXiv 2302.09664.
Defaults of the reference reading: rao estimator, mean-token-prob weights, reciprocal f,
α = 0.0417.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from cotflow.algorithms._checks import check_choice

Weighting = Literal["frequency", "seq_prob", "mean_token_prob"]
Estimator = Literal["rao", "mc"]
ScaleFn = Literal["reciprocal", "linear"]
WEIGHTINGS = ("frequency", "seq_prob", "mean_token_prob")
ESTIMATORS = ("rao", "mc")
SCALE_FNS = ("reciprocal", "linear")


def cluster_answers(
    answers: Sequence[str | None], equivalent: Callable[[str, str], bool],
) -> list[int]:
    """Greedy semantic clustering of a group's extracted final answers (SEED-GRPO,
    arXiv 2505.12346; bidirectional-equivalence clustering of arXiv 2302.09664).

    Each answer joins the first existing cluster whose representative (its first member) is
    `equivalent` to it, else opens a new one; None (no extractable answer) is always a
    singleton. Cluster ids are 0, 1, ... in order of first appearance.

    Args:
        answers: G extracted answers. equivalent: symmetric equivalence test, e.g. the
            verifier's; called as equivalent(representative, answer).
    Returns:
        G cluster ids.
    """
    reps: list[str | None] = []
    ids: list[int] = []
    for ans in answers:
        found = None
        if ans is not None:
            found = next((k for k, rep in enumerate(reps)
                          if rep is not None and equivalent(rep, ans)), None)
        if found is None:
            found = len(reps)
            reps.append(ans)
        ids.append(found)
    return ids


def _logsumexp(xs: Sequence[float]) -> float:
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def cluster_probabilities(
    cluster_ids: Sequence[int], *, weighting: Weighting, logliks: Sequence[float] | None,
) -> list[float]:
    """Mass p(C_k) of each cluster, normalised over the G samples (arXiv 2505.12346 §2.2).

    "frequency": |C_k| / G. "seq_prob" / "mean_token_prob": p_k = Σ_{i∈C_k} exp(ℓ_i) /
    Σ_j exp(ℓ_j), with ℓ_i the sequence log-likelihood under π_old, or its mean per token
    (the caller passes the matching `logliks`); computed by log-sum-exp.

    Returns:
        K masses, one per distinct cluster id in increasing id order (for `cluster_answers`
        output: position k is cluster k); they sum to 1.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    if not cluster_ids:
        raise ValueError("cluster_probabilities needs at least one sample")
    distinct = sorted(set(cluster_ids))
    if weighting == "frequency":
        return [sum(1 for c in cluster_ids if c == k) / len(cluster_ids) for k in distinct]
    if logliks is None or len(logliks) != len(cluster_ids):
        raise ValueError(f"weighting={weighting!r} needs one log-likelihood per sample, got "
                         f"{None if logliks is None else len(logliks)} for {len(cluster_ids)}")
    if not all(math.isfinite(x) for x in logliks):
        raise ValueError(f"log-likelihoods must be finite, got {list(logliks)[:8]}")
    total = _logsumexp(logliks)
    return [math.exp(_logsumexp([x for x, c in zip(logliks, cluster_ids, strict=True) if c == k])
                     - total) for k in distinct]


def semantic_entropy(probs: Sequence[float], *, estimator: Estimator) -> float:
    """Semantic entropy (arXiv 2302.09664) of the K cluster masses `probs`, in nats.

    "rao": -Σ_k p_k log p_k (what the reference implementation reportedly computes).
    "mc": -(1/K) Σ_k log p_k (the paper's Eq. 5); it needs every p_k > 0.
    """
    check_choice("estimator", estimator, ESTIMATORS)
    if not probs or any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
        raise ValueError(f"probs must be non-negative and sum to 1, got {list(probs)[:8]}")
    if estimator == "rao":
        return -sum(p * math.log(p) for p in probs if p > 0)
    if any(p == 0 for p in probs):
        # A cluster mass that underflowed (raw sequence log-probs) makes Eq. 5 infinite.
        raise ValueError(f"the mc estimator needs every cluster mass > 0, got {list(probs)[:8]}; "
                         "use weighting='mean_token_prob' or estimator='rao'")
    return -sum(math.log(p) for p in probs) / len(probs)


def seed_scale(se: float, group_size: int, *, alpha: float, f: ScaleFn) -> float:
    """SEED-GRPO advantage multiplier (arXiv 2505.12346), SE normalised by SE_max = ln G.

    "reciprocal": 1 / (1 + α·SE/ln G) (reference; α = 0.0417). "linear": 1 - α·SE/ln G,
    floored at 0 so a shrink never flips an advantage's sign (a choice of ours: the MC
    estimator can exceed ln G). G = 1 gives 1.0 (no entropy to measure).
    """
    check_choice("f", f, SCALE_FNS)
    if group_size < 1 or se < 0 or alpha < 0:
        raise ValueError(f"need group_size >= 1, se >= 0, alpha >= 0, got group_size="
                         f"{group_size} se={se} alpha={alpha}")
    if group_size == 1:
        return 1.0
    x = alpha * se / math.log(group_size)
    return 1.0 / (1.0 + x) if f == "reciprocal" else max(0.0, 1.0 - x)


def seed_advantages(
    rewards: Sequence[float], cluster_ids: Sequence[int], *, weighting: Weighting,
    logliks: Sequence[float] | None, estimator: Estimator, alpha: float, f: ScaleFn,
) -> list[float]:
    """One group's SEED-GRPO advantages (arXiv 2505.12346): (r_i - r̄) · seed_scale(SE).

    rewards, cluster_ids, logliks: G values each; returns G values."""
    if len(rewards) != len(cluster_ids):
        raise ValueError(f"{len(rewards)} rewards but {len(cluster_ids)} cluster ids")
    probs = cluster_probabilities(cluster_ids, weighting=weighting, logliks=logliks)
    scale = seed_scale(semantic_entropy(probs, estimator=estimator), len(rewards),
                       alpha=alpha, f=f)
    mean = sum(rewards) / len(rewards)
    return [(r - mean) * scale for r in rewards]

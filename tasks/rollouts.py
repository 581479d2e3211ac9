"""From verified rollouts to training examples: which samples train, with what weight.

Pure functions over the samples and verdicts tables (column dicts); the train stage runs
the model. Groups are the samples of one prompt (`prompt_id`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cotflow.algorithms.advantages import (
    grouped_advantages,
    informative_groups,
    zero_variance_share,
)
from cotflow.algorithms.dapo import overlong_penalty
from cotflow.algorithms.nft import r_hat_of
from cotflow.algorithms.seed import (
    cluster_answers,
    cluster_probabilities,
    seed_scale,
    semantic_entropy,
)


@dataclass(frozen=True)
class Rollout:
    prompt_id: str
    prompt: str
    completion: str
    num_tokens: int
    finished: bool
    reward: float  # the verify stage's reward: > 0 means correct
    extracted: str | None


def rollouts(samples: dict[str, list], verdicts: dict[str, list]) -> list[Rollout]:
    """Samples joined with their verdicts, in sample order."""
    keys = list(zip(samples["prompt_id"], samples["sample_idx"], strict=True))
    if keys != list(zip(verdicts["prompt_id"], verdicts["sample_idx"], strict=True)):
        raise ValueError("verdicts do not line up with samples (rerun verify)")
    return [Rollout(*row) for row in zip(
        samples["prompt_id"], samples["prompt"], samples["completion"], samples["num_tokens"],
        samples["finished"], verdicts["reward"], verdicts["extracted"], strict=True)]


def accepted(rows: Sequence[Rollout], *, dedup: bool) -> list[Rollout]:
    """Correct samples in order, optionally without repeats of the same (prompt, completion)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for r in rows:
        if r.reward <= 0 or (dedup and (r.prompt, r.completion) in seen):
            continue
        seen.add((r.prompt, r.completion))
        out.append(r)
    return out


def zero_variance_share_of(rows: Sequence[Rollout]) -> float:
    """Share of prompts whose samples all earned the same reward."""
    if not rows:
        return 0.0
    return zero_variance_share([r.reward for r in rows], [r.prompt_id for r in rows])


def shaped_rewards(rows: Sequence[Rollout], *, reward_incorrect: float, overlong_cache: int,
                   max_new_tokens: int) -> list[float]:
    """1 for a correct sample, `reward_incorrect` otherwise, plus DAPO's overlong penalty
    when `overlong_cache` > 0 (specs/algorithms-b.md §1.4, L_max = max_new_tokens)."""
    out = []
    for r in rows:
        value = 1.0 if r.reward > 0 else reward_incorrect
        if overlong_cache:
            value += overlong_penalty(r.num_tokens, max_len=max_new_tokens,
                                      cache_len=overlong_cache)
        out.append(value)
    return out


@dataclass(frozen=True)
class Weighted:
    rollout: Rollout
    advantage: float
    correct: float = 0.0
    r_hat: float = 0.0


def group_advantage_examples(
    rows: Sequence[Rollout], rewards: Sequence[float], *, std: str, eps: float,
    drop_uniform: bool, scales: dict[str, float] | None = None,
) -> tuple[list[Weighted], dict[str, float]]:
    """GRPO-family examples: group advantages, optionally without zero-variance groups and
    scaled per prompt (SEED-GRPO). Returns the examples and their statistics."""
    groups = [r.prompt_id for r in rows]
    stats = {"zero_variance_share": zero_variance_share(rewards, groups),
             "mean_shaped_reward": sum(rewards) / max(len(rewards), 1)}
    keep = informative_groups(rewards, groups) if drop_uniform else set(groups)
    kept = [(r, x) for r, x in zip(rows, rewards, strict=True) if r.prompt_id in keep]
    advantages = grouped_advantages([x for _, x in kept], [r.prompt_id for r, _ in kept],
                                    std=std, eps=eps)
    scales = scales or {}
    out = [Weighted(r, a * scales.get(r.prompt_id, 1.0))
           for (r, _), a in zip(kept, advantages, strict=True)]
    stats["groups_kept"] = len({r.prompt_id for r, _ in kept})
    stats["mean_abs_advantage"] = sum(abs(w.advantage) for w in out) / max(len(out), 1)
    return out, stats


def nft_examples(rows: Sequence[Rollout]) -> tuple[list[Weighted], dict[str, float]]:
    """NFT examples: label and the prompt's accuracy r̂; groups with r̂ of 0 or 1 carry no
    signal and are dropped, as the reference code requires (specs/algorithms-a.md §4.4)."""
    by_prompt: dict[str, list[Rollout]] = defaultdict(list)
    for r in rows:
        by_prompt[r.prompt_id].append(r)
    out: list[Weighted] = []
    for group in by_prompt.values():
        share = sum(r.reward > 0 for r in group) / len(group)
        if 0.0 < share < 1.0:
            r_hat = r_hat_of(share)
            out.extend(Weighted(r, 0.0, float(r.reward > 0), r_hat) for r in group)
    return out, {"zero_variance_share": zero_variance_share_of(rows),
                 "groups_kept": len({w.rollout.prompt_id for w in out})}


def semantic_entropy_scales(
    rows: Sequence[Rollout], equivalent: Callable[[str, str], bool], *, alpha: float,
    estimator: str, weighting: str, f: str, logliks: Sequence[float] | None,
) -> tuple[dict[str, float], dict[str, float]]:
    """SEED-GRPO: per prompt, the advantage scale from the semantic entropy of its answers,
    clustered by mathematical equivalence (specs/algorithms-a.md §2.2). `logliks` are
    per-sample log-likelihoods under the sampling policy (summed or per-token mean, to match
    `weighting`), needed unless weighting is "frequency"."""
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_prompt[r.prompt_id].append(i)
    scales: dict[str, float] = {}
    entropies = []
    for pid, idx in by_prompt.items():
        ids = cluster_answers([rows[i].extracted for i in idx], equivalent)
        probs = cluster_probabilities(
            ids, weighting=weighting,
            logliks=None if logliks is None else [logliks[i] for i in idx])
        se = semantic_entropy(probs, estimator=estimator)
        entropies.append(se)
        scales[pid] = seed_scale(se, len(idx), alpha=alpha, f=f)
    n = max(len(entropies), 1)
    return scales, {"semantic_entropy": sum(entropies) / n,
                    "mean_seed_scale": sum(scales.values()) / max(len(scales), 1)}


def answer_pairs(rows: Sequence[Rollout]) -> list[tuple[str, str]]:
    """The distinct pairs of different extracted answers within each prompt's group: what
    the verifier must compare for semantic clustering."""
    by_prompt: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.extracted is not None:
            by_prompt[r.prompt_id].add(r.extracted)
    pairs: set[tuple[str, str]] = set()
    for answers in by_prompt.values():
        ordered = sorted(answers)
        pairs.update((a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:])
    return sorted(pairs)


def equivalence_from(verdicts: dict[tuple[str, str], bool]) -> Callable[[str, str], bool]:
    """An equivalence test over precomputed verifier verdicts of answer pairs."""
    def equivalent(a: str, b: str) -> bool:
        return a == b or verdicts.get((a, b), False) or verdicts.get((b, a), False)
    return equivalent


def pairs_of(judgements: dict[str, list], rows: Sequence[Rollout],
             sample_idx: Sequence[int]) -> list[tuple[Rollout, Rollout]]:
    """The judge stage's (chosen, rejected) pairs as rollouts."""
    where: dict[tuple[str, int], Rollout] = {
        (r.prompt_id, i): r for r, i in zip(rows, sample_idx, strict=True)}
    out = []
    for pid, c, r in zip(judgements["prompt_id"], judgements["chosen_idx"],
                         judgements["rejected_idx"], strict=True):
        if (pid, c) not in where or (pid, r) not in where:
            raise ValueError(f"judgements name sample ({pid!r}, {c}/{r}) that is not in "
                             "samples (rerun judge)")
        out.append((where[(pid, c)], where[(pid, r)]))
    return out


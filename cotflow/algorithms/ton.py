"""TON's reward and what it is judged by (Think or Not?, arXiv 2505.16854; spec
specs/algorithms-b.md §3.4-3.5, worked example §3.8). Pure python.

The reward is accuracy + format, summed with weight 1 each; there is no reward for
skipping or for brevity: shorter completions come from outcome selection alone. The
question TON answers is whether the policy skips its working where it can (easy levels) and
keeps it where it cannot, so the skip ratio and the completion length are read per level.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def ton_rewards(accuracy: Sequence[float], formatted: Sequence[bool], *,
                accuracy_weight: float = 1.0, format_weight: float = 1.0) -> list[float]:
    """Per completion: accuracy_weight · accuracy + format_weight · 1[format ok].

    Args:
        accuracy: (N,) the accuracy reward (1 correct, 0 not: the verify stage's reward).
        formatted: (N,) whether each completion fully matches TON's format.
    """
    if len(accuracy) != len(formatted):
        raise ValueError(f"{len(accuracy)} accuracy rewards but {len(formatted)} format "
                         "checks")
    return [accuracy_weight * a + format_weight * float(f)
            for a, f in zip(accuracy, formatted, strict=True)]


def share(flags: Sequence[bool]) -> float:
    """The share of true flags (0 for none): the skip ratio of skip flags (§3.5)."""
    return sum(map(bool, flags)) / len(flags) if flags else 0.0


def per_level(levels: Sequence[int] | Sequence[str], values: Sequence[float], name: str,
              by: str = "difficulty") -> dict[str, float]:
    """`{name}_{by}_{d}`: the mean of `values` over the items of each level d (a difficulty,
    or another grouping such as a subject, named by `by`)."""
    if len(levels) != len(values):
        raise ValueError(f"{len(levels)} levels but {len(values)} values for {name}")
    grouped: dict[int | str, list[float]] = defaultdict(list)
    for level, value in zip(levels, values, strict=True):
        grouped[level].append(float(value))
    return {f"{name}_{by}_{d}": round(sum(v) / len(v), 6)
            for d, v in sorted(grouped.items())}


def completion_stats(levels: Sequence[int], texts: Sequence[str], num_tokens: Sequence[int],
                     *, think: bool) -> dict[str, float]:
    """Mean completion length, overall and per level; in TON's format (`think`) also the
    skip ratio the same ways and the share of completions in format."""
    from cotflow.verify.think import format_ok, skipped

    out = {"mean_completion_tokens": round(sum(num_tokens) / max(len(num_tokens), 1), 4),
           **per_level(levels, num_tokens, "mean_completion_tokens")}
    if think:
        skips = [skipped(t) for t in texts]
        out["skip_ratio"] = round(share(skips), 6)
        out.update(per_level(levels, [float(s) for s in skips], "skip_ratio"))
        out["format_fraction"] = round(share([format_ok(t) for t in texts]), 6)
    return out

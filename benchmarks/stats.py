"""Errors on the benchmarks' figures: paired differences over held-out problems, pooled over
seeds, and the verdict a claims table gives a paper's figure.

Two noises hide an effect here: which problems are held out (paired evaluation on the same
problems removes most of it) and the training run's own randomness (only seeds measure it).
A pooled error is the larger of the two estimates, so three seeds that agree by chance do not
make a difference look resolved that the problems cannot resolve.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Z = 1.96  # two-sided 95 %


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float
    n: int  # problems (a paired difference) or seeds (pooled)

    def __str__(self) -> str:
        return f"{self.mean:+.4g} ± {self.se:.2g}"

    @property
    def low(self) -> float:
        return self.mean - Z * self.se

    @property
    def high(self) -> float:
        return self.mean + Z * self.se

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes zero."""
        return self.low > 0 or self.high < 0


def mean_se(values: Sequence[float]) -> Estimate:
    """Mean and its standard error (sample sd / sqrt n; 0 for a single value)."""
    if not values:
        raise ValueError("no values")
    n = len(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    return Estimate(statistics.fmean(values), sd / math.sqrt(n), n)


def paired_difference(a: Mapping[str, float], b: Mapping[str, float]) -> Estimate:
    """Mean of a[i] - b[i] over the problems both scored, with its paired standard error."""
    shared = sorted(a.keys() & b.keys())
    if not shared:
        raise ValueError("the two evaluations share no problem")
    return mean_se([a[i] - b[i] for i in shared])


def pooled(per_seed: Sequence[Estimate]) -> Estimate:
    """Mean over seeds of per-seed estimates; its error is the larger of the seeds' spread
    (sd / sqrt S) and the per-seed errors combined (sqrt(sum se^2) / S)."""
    if not per_seed:
        raise ValueError("no seeds")
    s = len(per_seed)
    means = [e.mean for e in per_seed]
    spread = statistics.stdev(means) / math.sqrt(s) if s > 1 else 0.0
    within = math.sqrt(sum(e.se ** 2 for e in per_seed)) / s
    return Estimate(statistics.fmean(means), max(spread, within), s)


def verdict(ours: Estimate, paper: float, *, null: float = 0.0) -> str:
    """Whether our estimate reproduces a paper's figure of an effect over `null` (0 for a
    difference, 1 for a ratio): "reproduced" if the 95 % interval holds the paper's figure
    and excludes no effect; "not reproduced" if it excludes the paper's figure; else
    "within noise" (the interval holds both)."""
    holds_paper = ours.low <= paper <= ours.high
    holds_null = ours.low <= null <= ours.high
    if holds_paper and not holds_null:
        return "reproduced"
    if not holds_paper and not holds_null and (ours.mean - null) * (paper - null) > 0 and (
            abs(ours.mean - null) > abs(paper - null)):
        return "reproduced (larger)"
    if holds_paper:
        return "within noise"
    return "not reproduced"

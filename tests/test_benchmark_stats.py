"""The benchmarks' error bars and claim verdicts (benchmarks/stats.py) on hand-computed
numbers, and the task benchmark's histogram (benchmarks/task_difficulty.py)."""

from __future__ import annotations

import math
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from stats import Estimate, mean_se, paired_difference, pooled, verdict  # noqa: E402
from task_difficulty import histogram  # noqa: E402


def test_mean_se_by_hand() -> None:
    # values 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3
    e = mean_se([1.0, 2.0, 3.0, 6.0])
    assert e.mean == pytest.approx(3.0)
    assert e.se == pytest.approx(math.sqrt(14 / 3) / 2)
    assert mean_se([0.5]).se == 0.0
    with pytest.raises(ValueError, match="no values"):
        mean_se([])


def test_paired_difference_uses_shared_problems_only() -> None:
    a = {"p1": 1.0, "p2": 1.0, "p3": 0.0, "p4": 0.75, "x": 1.0}
    b = {"p1": 0.0, "p2": 1.0, "p3": 0.0, "p4": 0.25, "y": 0.0}
    # differences 1, 0, 0, 0.5: mean 0.375, variance (0.390625 + 2 * 0.140625 + 0.015625) / 3
    e = paired_difference(a, b)
    assert e.n == 4 and e.mean == pytest.approx(0.375)
    assert e.se == pytest.approx(math.sqrt((0.390625 + 0.28125 + 0.015625) / 3) / 2)
    with pytest.raises(ValueError, match="share no problem"):
        paired_difference({"a": 1.0}, {"b": 1.0})


def test_pooled_takes_the_larger_error() -> None:
    # seeds disagree more than their problems' errors say: the spread wins
    seeds = [Estimate(0.01, 0.001, 2000), Estimate(0.05, 0.001, 2000)]
    e = pooled(seeds)
    assert e.mean == pytest.approx(0.03)
    assert e.se == pytest.approx(math.sqrt(0.0008) / math.sqrt(2))
    # seeds agree exactly: the problems' error remains, sqrt(2 * 0.01^2) / 2
    same = pooled([Estimate(0.03, 0.01, 2000), Estimate(0.03, 0.01, 2000)])
    assert same.se == pytest.approx(math.sqrt(2) * 0.01 / 2)


def test_verdicts() -> None:
    # a difference claimed +5 points
    assert verdict(Estimate(0.05, 0.01, 3), 0.05) == "reproduced"
    assert verdict(Estimate(0.12, 0.01, 3), 0.05) == "reproduced (larger)"
    assert verdict(Estimate(0.01, 0.025, 3), 0.05) == "within noise"
    assert verdict(Estimate(0.0, 0.005, 3), 0.05) == "not reproduced"
    assert verdict(Estimate(-0.05, 0.01, 3), 0.05) == "not reproduced"
    # a speedup claimed 2x over no effect (1x)
    assert verdict(Estimate(0.9, 0.1, 3), 2.0, null=1.0) == "not reproduced"
    assert verdict(Estimate(2.2, 0.3, 3), 2.0, null=1.0) == "reproduced"
    assert Estimate(0.03, 0.01, 3).significant and not Estimate(0.01, 0.01, 3).significant


def test_histogram_keeps_the_ends_apart() -> None:
    ps = [0.0, 0.0, 0.0625, 0.25, 0.5, 0.9375, 1.0, 1.0, 1.0]
    assert histogram(ps) == [("p = 0", 2), ("0 < p <= 0.25", 2), ("0.25 < p <= 0.5", 1),
                             ("0.5 < p <= 0.75", 0), ("0.75 < p < 1", 1), ("p = 1", 3)]


def test_a_finished_arm_on_a_copied_warm_start_is_kept_whatever_its_warmstart_section():
    from harness import same_run

    done = {"seed": 1, "warmstart": {"refinement_examples": 0}, "train": {"lr": 1e-5}}
    wanted = {"seed": 1, "warmstart": {"refinement_examples": 2000}, "train": {"lr": 1e-5}}
    assert same_run(done, wanted, copied_base=True)
    assert not same_run(done, wanted, copied_base=False)  # its own warm start read them
    assert not same_run(done, {**wanted, "train": {"lr": 1e-4}}, copied_base=True)

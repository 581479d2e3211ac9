"""Progress of a step loop: the numbers on hand-worked cases, and when lines are logged."""

from __future__ import annotations

import logging

import pytest

from cotflow.progress import duration, estimate, progress_line
from models.progress_log import ProgressLog


def test_estimate_on_hand_numbers() -> None:
    # 48 of 480 steps in 16 s: 3 steps/s, 432 left -> 144 s; 24,000 tokens -> 1500/s.
    est = estimate(48, 480, 16.0, 24_000)
    assert est.fraction == pytest.approx(0.1)
    assert est.steps_per_s == pytest.approx(3.0)
    assert est.tokens_per_s == pytest.approx(1500.0)
    assert est.eta_s == pytest.approx(144.0)


def test_estimate_counts_only_this_runs_steps() -> None:
    # Resumed at step 100: 20 steps in 10 s are 2 steps/s, so 80 left take 40 s.
    est = estimate(120, 200, 10.0, 5_000, start=100)
    assert est.steps_per_s == pytest.approx(2.0)
    assert est.eta_s == pytest.approx(40.0)
    assert est.fraction == pytest.approx(0.6)


def test_estimate_before_any_step_and_when_done() -> None:
    assert estimate(0, 10, 0.0, 0).eta_s is None
    assert estimate(10, 10, 5.0, 100).eta_s == 0.0
    assert estimate(0, 0, 0.0, 0).fraction == 1.0


def test_duration_and_line() -> None:
    assert [duration(s) for s in (None, 7.4, 125, 3720)] == ["?", "7s", "2m05s", "1h02m"]
    line = progress_line("warm start", 48, 480, 1.23456, estimate(48, 480, 16.0, 24_000))
    assert line == ("warm start: step 48/480 (10%) loss 1.2346, 3.00 steps/s, "
                    "1500 tokens/s, ETA 2m24s")


class Clock:
    """A clock the test moves by hand, so which steps log is decided by the numbers."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def logged_steps(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage().split(" (")[0] for r in records]


def test_lines_at_first_step_each_tenth_the_interval_and_end(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"), \
            ProgressLog("train", 100, logger=logger, interval_s=20.0, clock=clock) as p:
        for step in range(1, 101):
            clock.now += 0.5 if step != 15 else 30.0  # one slow step: the interval's line
            p.step(loss=1.0, tokens=10)
    assert logged_steps(caplog.records) == [
        "train: step 1/100", "train: step 10/100", "train: step 15/100",
        *(f"train: step {k}/100" for k in range(20, 101, 10))]


def test_resumed_and_cut_short_loop_logs_its_last_step(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    logger = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"), \
            ProgressLog("warm start", 50, logger=logger, start=40, clock=clock) as p:
        for _ in range(3):
            clock.now += 1.0
            p.step(loss=2.0, tokens=100)
    # Steps 41 (the first of this run) and 43 (the last): 3 steps in 3 s, 7 left.
    assert [r.getMessage() for r in caplog.records] == [
        "warm start: step 41/50 (82%) loss 2.0000, 1.00 steps/s, 100 tokens/s, ETA 9s",
        "warm start: step 43/50 (86%) loss 2.0000, 1.00 steps/s, 100 tokens/s, ETA 7s"]


def test_deepspeed_progress_lines_are_forwarded_alone() -> None:
    from models.deepspeed_trainer import PROGRESS_LOGGER, progress_forwarder

    got: list[str] = []
    forward = progress_forwarder(got.append)
    for line in (
            "[2026-12-02 07:00:00,000] [INFO] [launch.py:256:main] process 4242 spawned",
            f"2026-12-02 07:00:05,123 {PROGRESS_LOGGER} train (deepspeed, 2 ranks): step 1/4 "
            "(25%) loss 0.5000, 1.00 steps/s, 100 tokens/s, ETA 3s",
            "2026-12-02 07:00:05,200 deepspeed INFO something else",
            f"{PROGRESS_LOGGER} without the separator"):
        forward(line)
    assert got == ["train (deepspeed, 2 ranks): step 1/4 (25%) loss 0.5000, 1.00 steps/s, "
                   "100 tokens/s, ETA 3s"]

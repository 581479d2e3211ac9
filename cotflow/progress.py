"""Progress of a loop of steps: rate, tokens/s and ETA from plain numbers (no clock here).

`estimate` counts only the steps this run took (`start`: steps already done on entry, e.g.
restored from a checkpoint), so a resumed loop does not report the old steps' speed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    fraction: float  # of the total, 0..1
    steps_per_s: float
    tokens_per_s: float
    eta_s: float | None  # None until a step of this run is done


def estimate(done: int, total: int, elapsed_s: float, tokens: int, *,
             start: int = 0) -> Estimate:
    """Where a loop of `total` steps stands after `done` of them, `elapsed_s` seconds and
    `tokens` tokens since it (re)started at step `start`."""
    taken = done - start
    steps_per_s = taken / elapsed_s if elapsed_s > 0 else 0.0
    tokens_per_s = tokens / elapsed_s if elapsed_s > 0 else 0.0
    left = max(total - done, 0)
    eta = left / steps_per_s if steps_per_s > 0 else (0.0 if not left else None)
    return Estimate(done / total if total else 1.0, steps_per_s, tokens_per_s, eta)


def duration(seconds: float | None) -> str:
    """'1h02m', '2m05s', '7s'; '?' when unknown."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def progress_line(label: str, done: int, total: int, loss: float | None,
                  est: Estimate) -> str:
    """One log line: 'train: step 48/480 (10%) loss 1.2346, 2.7 steps/s, 1523 tokens/s,
    ETA 2m40s'."""
    loss_part = "" if loss is None else f" loss {loss:.4f},"
    return (f"{label}: step {done}/{total} ({est.fraction:.0%}){loss_part} "
            f"{est.steps_per_s:.2f} steps/s, {est.tokens_per_s:.0f} tokens/s, "
            f"ETA {duration(est.eta_s)}")

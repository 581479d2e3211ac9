"""What a verify reward means, written once: every stage and recipe asks here. (How a
completion earns one is cotflow/verify/scoring.py.)"""

from __future__ import annotations


def is_correct(reward: float) -> bool:
    """A sample is correct (accepted, a positive, solved) when its verify reward is > 0.

    The verify stage's rewards are 1 (right answer through right steps) or 0; the GVM paper
    tests > 0.5, which agrees on these values."""
    return reward > 0

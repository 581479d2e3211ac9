"""How completions earn a verify reward: graded in the verifier's worker pool, with the
built-in task's step check. What a reward means is cotflow/verify/rewards.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

# Formats whose answer may sit in <answer> tags: "3+4=7<answer>7</answer>" has a step line.
_TAGGED = frozenset({"think", "answer-tag", "auto"})

if TYPE_CHECKING:  # type hints only: this module stays import-light
    from cotflow.config import VerifyConfig
    from cotflow.verify.grade import Grade
    from cotflow.verify.pool import VerifierPool


def rewards_of(v: VerifyConfig, pool: VerifierPool, golds: Sequence[str],
               completions: Sequence[str]) -> tuple[list[Grade], list[float], list[bool]]:
    """Grades, rewards and wrong-step flags of completions against their gold answers.

    The reward is 1 for a correct answer, except that with `v.check_steps` a correct answer
    reached through a wrong `x op y = z` step earns 0 (see tasks/verify.py). The answer
    is read in `v.format`; in formats with tags, the step check reads the text between them."""
    from cotflow.data.arithmetic import steps_consistent
    from cotflow.verify.grade import CORRECT
    from cotflow.verify.think import without_tags

    grades = pool.grade_many(list(zip(golds, completions, strict=True)), v.format)
    correct = [g.verdict == CORRECT for g in grades]
    lines = without_tags if v.format in _TAGGED else str
    wrong_steps = [ok and v.check_steps and not steps_consistent(lines(text))
                   for ok, text in zip(correct, completions, strict=True)]
    rewards = [1.0 if ok and not bad else 0.0
               for ok, bad in zip(correct, wrong_steps, strict=True)]
    return grades, rewards, wrong_steps


def grade_rewards(v: VerifyConfig, golds: Sequence[str],
                  completions: Sequence[str]) -> tuple[list[Grade], list[float], list[bool]]:
    """`rewards_of` in a verifier pool of its own."""
    from cotflow.verify.pool import VerifierPool

    with VerifierPool(workers=v.workers, timeout_s=v.timeout_s, memory_mb=v.memory_mb) as pool:
        return rewards_of(v, pool, golds, completions)

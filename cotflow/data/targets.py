"""The warm start's SFT targets: each problem's worked solution, written in the format the
verifier reads (verify.format), and TON's thought dropout.

The solution as it is (its last line ``\\boxed{x}``) is read by ``boxed``, ``auto`` and, on
numeric answers, ``last-number``; ``gsm8k`` and ``answer-tag`` end the working with
``#### x`` and ``<answer>x</answer>`` instead.

In TON's format the working is the thought and the final answer the answer:
``3+4=7\\n\\boxed{7}`` becomes ``<think>\\n3+4=7\\n</think><answer>7</answer>``. Thought
dropout (TON, arXiv 2505.16854; specs/algorithms-b.md §3.3) replaces the thought by the
empty one, ``<think>\\n\\n</think>``, with probability p per problem, drawn once when the
data is built (static, as the paper's SFT JSON) and keyed to (seed, problem id), so a
problem keeps its draw whatever else is in the split.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from cotflow.data.arithmetic import solution_steps
from cotflow.verify.extract import FORMATS
from cotflow.verify.think import ANSWER_CLOSE, ANSWER_OPEN, think_answer

# The line that states the answer, in the formats whose answer is not a \boxed{} line.
_ANSWER_LINE = {"gsm8k": "#### {}", "answer-tag": ANSWER_OPEN + "{}" + ANSWER_CLOSE}


def dropped(seed: int, problem_id: str, p: float) -> bool:
    """Whether problem `problem_id`'s thought is dropped, with probability `p`."""
    if not 0 <= p <= 1:
        raise ValueError(f"thought dropout p={p} must lie in [0, 1]")
    # A string seed is hashed with SHA-512 by `random`: the same on every run and platform.
    return random.Random(f"thought-dropout/{seed}/{problem_id}").random() < p


def think_target(solution: str, answer: str, *, drop: bool) -> str:
    """`solution`'s working (its lines but a final bare \\boxed{}) as the thought and
    `answer` as the answer; the empty thought when `drop`."""
    return think_answer("" if drop else "\n".join(solution_steps(solution)), answer)


def sft_targets(problems: Sequence[dict[str, Any]], fmt: str, *, dropout: float, seed: int
                ) -> list[tuple[dict[str, Any], str, bool]]:
    """(problem, target, thought dropped) for each problem with a worked solution."""
    if fmt not in FORMATS:
        raise ValueError(f"verify.format {fmt!r}: expected one of {FORMATS}")
    if dropout and fmt != "think":
        raise ValueError("thought dropout needs verify.format think")
    out = []
    for p in problems:
        if not p["solution"]:
            continue
        if fmt == "think":
            drop = dropped(seed, p["id"], dropout)
            out.append((p, think_target(p["solution"], p["answer"], drop=drop), drop))
        elif fmt in _ANSWER_LINE:
            lines = [*solution_steps(p["solution"]), _ANSWER_LINE[fmt].format(p["answer"])]
            out.append((p, "\n".join(lines), False))
        else:
            out.append((p, p["solution"], False))
    return out

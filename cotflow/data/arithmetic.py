"""Built-in task: short templated arithmetic word problems with step-by-step solutions.

Texts are deliberately tiny and regular so a ~1M-parameter character-level model can learn
them in minutes on a CPU. Every solution line is ``x<op>y=z`` and the last line is
``\\boxed{answer}``.

Levels span what a real model meets on real math sets (task v2): 1 is one step a warm start
nearly always solves, and can answer without working; 2 and 3 (two steps; a one-digit
product then a sum) sit in the middle; 4 chains four steps (credit inside a solution
matters) and 5 multiplies a two-digit number, which a warm start rarely gets right.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache

NAMES = ("Ann", "Bo", "Cy", "Di", "Ed", "Flo")
ITEMS = ("eggs", "pens", "nuts", "cups", "hats", "keys")

# Operand ranges per operator: small numbers keep the character vocabulary and lengths small.
ADD_RANGE = range(1, 21)
MUL_RANGE = range(2, 10)
TWO_DIGIT_RANGE = range(11, 30)  # level 5's first factor


@dataclass(frozen=True)
class _Template:
    difficulty: int
    question: str  # format fields: n (name), i (item), a, b, c, d, e (operands)
    ops: str  # one operator per solution step, applied left to right
    first: range | None = None  # the first operand's range, when not the first operator's


_TEMPLATES = (
    _Template(1, "{n} has {a} {i} and gets {b} more. How many {i}?", "+"),
    _Template(1, "{n} has {a} {i} and gives away {b}. How many {i}?", "-"),
    _Template(2, "{n} has {a} {i}, gets {b}, gives {c}. How many {i}?", "+-"),
    _Template(2, "{n} has {a} {i}, gives {b}, gets {c}. How many {i}?", "-+"),
    _Template(3, "{n} buys {a} bags of {b} {i} and gets {c} more. How many {i}?", "*+"),
    _Template(3, "{n} buys {a} bags of {b} {i} and gives away {c}. How many {i}?", "*-"),
    _Template(4, "{n} has {a} {i}, gets {b}, gives {c}, gets {d}, gives {e}. How many?", "+-+-"),
    _Template(4, "{n} has {a} {i}, gives {b}, gets {c}, gives {d}, gets {e}. How many?", "-+-+"),
    _Template(5, "{n} buys {a} boxes of {b} {i} and gets {c} more. How many {i}?", "*+",
              TWO_DIGIT_RANGE),
    _Template(5, "{n} buys {a} boxes of {b} {i} and gives away {c}. How many {i}?", "*-",
              TWO_DIGIT_RANGE),
)

DIFFICULTIES = tuple(sorted({t.difficulty for t in _TEMPLATES}))


def _apply(x: int, op: str, y: int) -> int:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    raise ValueError(f"unsupported operator {op!r}")


def _operand_ranges(template: _Template) -> list[range]:
    # The first two operands share the first operator; each later step adds one operand.
    first = MUL_RANGE if template.ops[0] == "*" else ADD_RANGE
    rest = [MUL_RANGE if op == "*" else ADD_RANGE for op in template.ops[1:]]
    return [template.first or first, first, *rest]


def _steps(template: _Template, operands: Sequence[int]) -> list[tuple[int, str, int, int]] | None:
    """The (x, op, y, z) steps, or None when an intermediate result would go negative."""
    steps = []
    acc = operands[0]
    for op, y in zip(template.ops, operands[1:], strict=True):
        z = _apply(acc, op, y)
        if z < 0:
            return None
        steps.append((acc, op, y, z))
        acc = z
    return steps


def _make(template: _Template, name: str, item: str, operands: Sequence[int], pid: str) -> dict:
    steps = _steps(template, operands)
    assert steps is not None
    answer = str(steps[-1][3])
    lines = [f"{x}{op}{y}={z}" for x, op, y, z in steps] + [f"\\boxed{{{answer}}}"]
    fields = dict(zip("abcde", operands, strict=False))
    return {
        "id": pid,
        "question": template.question.format(n=name, i=item, **fields),
        "solution": "\n".join(lines),
        "answer": answer,
        "difficulty": template.difficulty,
    }


def _draw(rng: random.Random, difficulty: int, pid: str) -> dict:
    template = rng.choice([t for t in _TEMPLATES if t.difficulty == difficulty])
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    ranges = _operand_ranges(template)
    # Rejection sampling keeps the draw uniform over the valid (non-negative) operand tuples.
    while True:
        operands = [rng.choice(r) for r in ranges]
        if _steps(template, operands) is not None:
            return _make(template, name, item, operands, pid)


def _check_difficulties(difficulties: Sequence[int]) -> tuple[int, ...]:
    levels = tuple(difficulties)
    if not levels:
        raise ValueError("difficulties must not be empty")
    unknown = sorted(set(levels) - set(DIFFICULTIES))
    if unknown:
        raise ValueError(f"unknown difficulties {unknown}; available: {list(DIFFICULTIES)}")
    return levels


def _stream(seed: int, difficulties: Sequence[int]) -> Iterator[dict]:
    levels = _check_difficulties(difficulties)
    rng = random.Random(seed)
    index = 0
    while True:
        yield _draw(rng, rng.choice(levels), f"arith-{seed}-{index}")
        index += 1


def generate_problems(n: int, seed: int, difficulties: Sequence[int] = DIFFICULTIES) -> list[dict]:
    """``n`` problems (duplicates possible) drawn deterministically from ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream = _stream(seed, difficulties)
    return [next(stream) for _ in range(n)]


@cache
def _space_size(difficulty: int) -> int:
    """Number of distinct question texts at one difficulty (names x items x operand tuples)."""
    total = 0
    for template in (t for t in _TEMPLATES if t.difficulty == difficulty):
        ranges = _operand_ranges(template)
        # Valid tuples counted by running value, not enumerated: level 4 has 6.4M of them.
        ways: Counter[int] = Counter(ranges[0])
        for op, r in zip(template.ops, ranges[1:], strict=True):
            step: Counter[int] = Counter()
            for acc, count in ways.items():
                for y in r:
                    z = _apply(acc, op, y)
                    if z >= 0:
                        step[z] += count
            ways = step
        total += sum(ways.values())
    return total * len(NAMES) * len(ITEMS)


def make_splits(
    n_train: int, n_test: int, seed: int, difficulties: Sequence[int] = DIFFICULTIES
) -> tuple[list[dict], list[dict]]:
    """Train and test problems with no question text shared within or across the splits.

    The test split is taken first from the seeded stream, so it stays the same when only
    ``n_train`` changes.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"split sizes must be >= 0, got n_train={n_train}, n_test={n_test}")
    levels = _check_difficulties(difficulties)
    needed = n_train + n_test
    space = sum(_space_size(d) for d in set(levels))
    if needed > space:
        raise ValueError(
            f"cannot make {n_train} train + {n_test} test unique problems for difficulties "
            f"{sorted(set(levels))}: only {space} distinct questions exist"
        )
    seen: set[str] = set()
    unique: list[dict] = []
    max_draws = 20 * needed + 1000
    stream = _stream(seed, levels)
    for _ in range(max_draws):
        if len(unique) == needed:
            break
        problem = next(stream)
        if problem["question"] not in seen:
            seen.add(problem["question"])
            unique.append(problem)
    if len(unique) < needed:
        # Random draws rarely hit the last unseen questions of a nearly exhausted space.
        raise ValueError(
            f"found only {len(unique)} unique problems after {max_draws} draws but "
            f"{needed} were requested (n_train={n_train}, n_test={n_test}) out of {space} "
            "distinct questions; lower the sizes or add difficulties"
        )
    return unique[n_test:], unique[:n_test]


# A line that only states the answer: in the boxed, gsm8k and answer-tag formats.
_ANSWER_LINE = re.compile(r"\\boxed\{[^{}]*\}|####[^\n]*|<answer>[^<]*</answer>")
# Bounded digits: model text may hold huge numbers, and int() of them is slow or refused.
_NUM = r"-?(?:\d{1,3}(?:,\d{3}){1,10}|\d{1,30})"
_EQUATION = re.compile(rf"({_NUM})\s*([-+*/x\u00d7\u2212])\s*({_NUM})\s*=\s*({_NUM})")


def solution_steps(solution: str) -> list[str]:
    """The non-empty reasoning lines of a solution, without a final bare answer line
    (``\\boxed{x}``, ``#### x`` or ``<answer>x</answer>``)."""
    lines = [line.strip() for line in solution.splitlines()]
    lines = [line for line in lines if line]
    if lines and _ANSWER_LINE.fullmatch(lines[-1]):
        lines.pop()
    return lines


def reasoning_lines(completion: str) -> list[str]:
    """The working of a completion: its thought's lines in TON's format (the tags and the
    answer are not steps), else its solution steps."""
    from cotflow.verify.think import thought_of

    thought = thought_of(completion)
    return solution_steps(completion if thought is None else thought)


def equation(step: str) -> tuple[int, str, int, int] | None:
    """(x, op, y, z) of an ``x op y = z`` line, op as one of + - * /; None if it is not one."""
    match = _EQUATION.fullmatch(step.strip())
    if match is None:
        return None
    x, op, y, z = match.groups()
    op = {"\u2212": "-", "x": "*", "\u00d7": "*"}.get(op, op)
    a, b, c = (int(v.replace(",", "")) for v in (x, y, z))
    return a, op, b, c


def check_step(step: str) -> bool | None:
    """True/False for a correct/incorrect ``x op y = z`` line; None if it is not one."""
    eq = equation(step)
    if eq is None:
        return None
    a, op, b, c = eq
    if op == "/":
        # Division must be exact: integers only, and 7/2=3 is a wrong step.
        return b != 0 and a == b * c
    return _apply(a, op, b) == c


def steps_consistent(text: str) -> bool:
    """False if any ``x op y = z`` line of `text` is wrong arithmetic; other lines pass."""
    return all(check_step(step) is not False for step in solution_steps(text))


def _parsed_step(step: str) -> tuple[int, str, int, int] | None:
    """(x, op, y, z) of a true ``x op y = z`` line, op one of + - * /; None otherwise."""
    match = _EQUATION.fullmatch(step.strip())
    if match is None or not check_step(step):
        return None
    x, op, y, z = match.groups()
    a, b, c = (int(v.replace(",", "")) for v in (x, y, z))
    return a, {"\u2212": "-", "x": "*", "\u00d7": "*"}.get(op, op), b, c


def _same_step(step: tuple[int, str, int, int], ref: tuple[int, str, int, int]) -> bool:
    # The task's step up to the order of a sum's or a product's operands.
    (x, op, y, z), (rx, rop, ry, rz) = step, ref
    if op != rop or z != rz:
        return False
    return (x, y) == (rx, ry) or (op in "+*" and (y, x) == (rx, ry))


def answer_follows(completion: str, solution: str, answer: str | None) -> bool:
    """VerIPO's consistency check (does the final answer follow from the reasoning?),
    exact on this task because it knows its steps (`solution`):
    - the reasoning is the task's steps (each a true ``x op y = z`` line equal to the
      solution's, operands of + and × in either order): the answer must be the last
      step's result, so "right steps, wrong final answer" is inconsistent;
    - otherwise the steps are wrong: a right answer through them is inconsistent ("right
      answer through wrong steps", and no steps at all), and a wrong answer is consistent
      only if it is what the last written step derives.
    `answer` is the extracted final answer (None: none found, which follows from nothing).
    """
    value = _int_answer(answer)
    ref_lines = solution_steps(solution)
    ref = [_parsed_step(s) for s in ref_lines]
    if not ref or any(r is None for r in ref):
        raise ValueError(f"solution {solution!r} is not a chain of true x op y = z steps")
    lines = reasoning_lines(completion)
    steps = [_parsed_step(s) for s in lines]
    if value is None or not lines:
        return False
    task_steps = len(steps) == len(ref) and all(
        s is not None and _same_step(s, r) for s, r in zip(steps, ref, strict=True))
    if task_steps:
        return value == ref[-1][3]
    derived = _EQUATION.fullmatch(lines[-1])
    right = value == ref[-1][3]
    return not right and derived is not None and value == int(derived.group(4).replace(",", ""))


def _int_answer(answer: str | None) -> int | None:
    if answer is None or not re.fullmatch(_NUM, answer.strip()):
        return None
    return int(answer.strip().replace(",", ""))

"""Tests for the built-in arithmetic task."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from cotflow.data import check_step, generate_problems, make_splits, solution_steps, validate_rows


def test_generation_is_deterministic_per_seed() -> None:
    assert generate_problems(200, seed=3) == generate_problems(200, seed=3)
    assert generate_problems(200, seed=3) != generate_problems(200, seed=4)


def test_generation_ignores_global_random_state() -> None:
    random.seed(1)
    first = generate_problems(50, seed=0)
    random.seed(2)
    assert generate_problems(50, seed=0) == first


def test_records_have_the_expected_shape() -> None:
    problems = generate_problems(300, seed=0)
    assert len({p["id"] for p in problems}) == len(problems)
    for p in problems:
        assert set(p) == {"id", "question", "solution", "answer", "difficulty"}
        assert isinstance(p["difficulty"], int)
    validate_rows(problems, "arithmetic")


def test_every_solution_is_correct_and_ends_in_the_answer() -> None:
    for p in generate_problems(2000, seed=1):
        steps = solution_steps(p["solution"])
        assert len(steps) == {1: 1, 2: 2, 3: 2, 4: 4, 5: 2}[p["difficulty"]]
        assert all(check_step(s) is True for s in steps), p
        assert p["solution"].splitlines()[-1] == f"\\boxed{{{p['answer']}}}"
        assert steps[-1].rsplit("=", 1)[1] == p["answer"]
        assert re.fullmatch(r"\d+", p["answer"])
        # Each step continues from the previous result.
        for prev, nxt in zip(steps, steps[1:], strict=False):
            assert nxt.startswith(prev.rsplit("=", 1)[1])


def _ops(problem: dict) -> str:
    return re.sub(r"[\d=]", "", "".join(solution_steps(problem["solution"])))


def test_difficulty_shapes() -> None:
    problems = generate_problems(1000, seed=2)
    ops = {d: {_ops(p) for p in problems if p["difficulty"] == d} for d in range(1, 6)}
    assert ops[1] == {"+", "-"}
    assert ops[2] == {"+-", "-+"}
    assert ops[3] == {"*+", "*-"}
    assert ops[4] == {"+-+-", "-+-+"}
    assert ops[5] == {"*+", "*-"}
    # Level 3 multiplies one-digit numbers, level 5 a two-digit one by a one-digit one.
    first = {d: {int(p["solution"].split("*")[0]) for p in problems if p["difficulty"] == d}
             for d in (3, 5)}
    assert first[3] <= set(range(2, 10)) and first[5] <= set(range(11, 30))


def test_difficulties_are_all_covered_and_roughly_uniform() -> None:
    counts = Counter(p["difficulty"] for p in generate_problems(5000, seed=5))
    assert set(counts) == {1, 2, 3, 4, 5}
    assert all(800 < c < 1200 for c in counts.values()), counts
    only = {p["difficulty"] for p in generate_problems(100, seed=5, difficulties=(2,))}
    assert only == {2}


def test_texts_are_short_and_ascii() -> None:
    for p in generate_problems(3000, seed=6):
        assert len(p["question"]) <= 66, p["question"]
        # Room for <eos> within params.yaml's sample.max_new_tokens = 48.
        assert len(p["solution"]) <= 46, p["solution"]
        assert (p["question"] + p["solution"]).isascii()


def test_bad_generation_arguments() -> None:
    with pytest.raises(ValueError, match="unknown difficulties"):
        generate_problems(5, seed=0, difficulties=(6,))
    with pytest.raises(ValueError, match="must not be empty"):
        generate_problems(5, seed=0, difficulties=())
    assert generate_problems(0, seed=0) == []


def test_splits_are_disjoint_unique_and_deterministic() -> None:
    train, test = make_splits(2000, 300, seed=7)
    assert (len(train), len(test)) == (2000, 300)
    train_q = {p["question"] for p in train}
    test_q = {p["question"] for p in test}
    assert len(train_q) == 2000 and len(test_q) == 300
    assert not train_q & test_q
    assert len({p["id"] for p in train + test}) == 2300
    assert make_splits(2000, 300, seed=7) == (train, test)
    # The held-out set does not move when only the training size changes.
    assert make_splits(500, 300, seed=7)[1] == test


def test_make_splits_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="only 21960 distinct questions"):
        make_splits(21000, 1000, seed=0, difficulties=(1,))
    with pytest.raises(ValueError, match=">= 0"):
        make_splits(-1, 10, seed=0)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        ("7+5=12", True),
        ("7+5=13", False),
        ("17-3=14", True),
        ("3 * 4 = 12", True),
        ("3*4=11", False),
        ("12/4=3", True),
        ("7/2=3", False),
        ("1/0=0", False),
        ("1,200+34=1,234", True),
        ("\\boxed{12}", None),
        ("So she has 12 eggs.", None),
        ("7+5", None),
        ("", None),
    ],
)
def test_check_step(step: str, expected: bool | None) -> None:
    assert check_step(step) is expected


def test_solution_steps_drops_blank_lines_and_boxed_answer() -> None:
    assert solution_steps("3*4=12\n\n 12-2=10 \n\\boxed{10}\n") == ["3*4=12", "12-2=10"]
    assert solution_steps("") == []


def test_steps_consistent_flags_cancelling_errors():
    from cotflow.data.arithmetic import steps_consistent

    assert steps_consistent("17-16=1\n1+13=14\n\\boxed{14}")
    # Right final answer through two wrong steps: rejected.
    assert not steps_consistent("17-16=0\n0+13=14\n\\boxed{14}")
    assert steps_consistent("no equations here \\boxed{3}")
    assert steps_consistent("9" * 5000 + "+1=2\n\\boxed{2}")  # not an equation we read


def test_question_space_is_counted_exactly() -> None:
    """The counting shortcut equals enumerating every operand tuple (levels small enough)."""
    import itertools

    from cotflow.data import arithmetic as a

    for level in (1, 2, 3, 5):
        tuples = 0
        for t in (t for t in a._TEMPLATES if t.difficulty == level):
            tuples += sum(a._steps(t, ops) is not None
                          for ops in itertools.product(*a._operand_ranges(t)))
        assert a._space_size(level) == tuples * len(a.NAMES) * len(a.ITEMS)

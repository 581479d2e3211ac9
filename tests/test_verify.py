"""Answer extraction and in-process grading (cotflow.verify.extract / grade)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cotflow.verify.extract import extract_boxed, parse_reference_answer
from cotflow.verify.grade import (
    CORRECT,
    INCORRECT,
    TIMEOUT,
    UNPARSEABLE,
    Grade,
    grade_answer,
    triage,
)

PWNED = "/tmp/pwned_cotflow"

# (gold, completion, expected verdict)
GRADE_CASES = [
    ("42", r"so the answer is \boxed{42}.", CORRECT),  # plain integer, fast path
    ("42", r"\boxed{41}", INCORRECT),  # wrong integer
    ("-7", r"\boxed{-7}", CORRECT),  # negative number
    ("-7", r"\boxed{7}", INCORRECT),  # sign matters
    ("1,000", r"\boxed{1000}", CORRECT),  # thousands comma in gold
    ("1000", r"\boxed{1,000}", CORRECT),  # thousands comma in prediction
    ("2.50", r"\boxed{2.5}", CORRECT),  # trailing zero decimal
    ("0.5", r"\boxed{.5}", CORRECT),  # leading-dot decimal
    ("3/4", r"\boxed{0.75}", CORRECT),  # simple fraction vs decimal, exact
    ("1/3", r"\boxed{0.333}", INCORRECT),  # exact comparison: no rounding credit
    ("0.5", r"\boxed{\frac{1}{2}}", CORRECT),  # decimal vs LaTeX fraction (math-verify)
    (r"\frac{3}{4}", r"\boxed{\dfrac{3}{4}}", CORRECT),  # \dfrac vs \frac
    (r"\frac{3}{4}", r"\boxed{3/4}", CORRECT),  # LaTeX gold vs slash fraction
    (r"\frac{3}{4}", r"\boxed{\frac{4}{3}}", INCORRECT),  # inverted fraction
    (r"2\sqrt{2}", r"\boxed{\sqrt{8}}", CORRECT),  # symbolic equivalence
    (r"\sqrt{2}", r"\boxed{\sqrt{3}}", INCORRECT),  # different radicals
    ("2", r"\boxed{\sqrt{4}}", CORRECT),  # number vs expression equal to it
    (r"\pi", r"\boxed{3.14}", INCORRECT),  # too coarse an approximation
    (r"x^2+1", r"\boxed{1+x^2}", CORRECT),  # commuted polynomial
    ("1", r"\boxed{\sin(x)^2+\cos(x)^2}", CORRECT),  # needs simplification
    ("3", r"\boxed{x = 3}", CORRECT),  # assignment form of a number
    ("10", r"\boxed{10\text{ cm}}", CORRECT),  # units stripped
    (r"\{1,2\}", r"\boxed{\{2,1\}}", CORRECT),  # sets are unordered
    (r"\{1,2\}", r"\boxed{\{1,3\}}", INCORRECT),  # different set
    ("(1, 2)", r"\boxed{(1,2)}", CORRECT),  # pair, whitespace differs
    (r"[0,1)", r"\boxed{[0, 1)}", CORRECT),  # half-open interval
    (r"[0,1)", r"\boxed{(0,1]}", INCORRECT),  # wrong endpoints open/closed
    (r"(-\infty, 2]", r"\boxed{(-\infty,2]}", CORRECT),  # unbounded interval
    (r"\text{Monday}", r"\boxed{\text{Monday}}", CORRECT),  # text answer
    (r"\text{Monday}", r"\boxed{\text{Tuesday}}", INCORRECT),  # wrong text answer
    (r"\text{(B)}", r"\boxed{B}", CORRECT),  # multiple-choice letter
    ("5", r"\fbox{5}", CORRECT),  # \fbox counts as a box
    ("5", r"first \boxed{5}, no wait: \boxed{6}", INCORRECT),  # last box wins
    ("42", "The answer is 42.", UNPARSEABLE),  # no box at all
    ("5", r"\boxed{\frac{}{", UNPARSEABLE),  # truncated garbage, unbalanced box
    ("5", r"\boxed{\frac{}{}}", UNPARSEABLE),  # balanced garbage
    ("5", r"\boxed{}", UNPARSEABLE),  # empty box
    ("5", r"\boxed{   }", UNPARSEABLE),  # blank box
    ("1", "\\boxed{" + "1+" * 600 + "1}", UNPARSEABLE),  # over the length cap
    ("1", "\\boxed{" + "(" * 60 + "1" + ")" * 60 + "}", UNPARSEABLE),  # too deeply nested
]


@pytest.mark.parametrize(("gold", "completion", "expected"), GRADE_CASES)
def test_grade_table(gold: str, completion: str, expected: str) -> None:
    assert grade_answer(gold, completion).verdict == expected


def test_grade_fields() -> None:
    assert grade_answer("2", r"\boxed{2}") == Grade(CORRECT, "2")
    assert grade_answer("2", "no box") == Grade(UNPARSEABLE, None)
    long = grade_answer("1", "\\boxed{" + "x" * 5000 + "}")
    assert long.extracted is not None and len(long.extracted) == 200
    assert {CORRECT, INCORRECT, UNPARSEABLE, TIMEOUT} == {
        "correct",
        "incorrect",
        "unparseable",
        "timeout",
    }


INJECTIONS = [
    r"\boxed{__import__('os').system('touch /tmp/pwned_cotflow')}",
    r"\boxed{exec(\"open('/tmp/pwned_cotflow', 'w')\")}",
    r"\boxed{eval('__import__(\"os\").system(\"touch /tmp/pwned_cotflow\")')}",
    r"\boxed{\text{__import__('os').system('touch /tmp/pwned_cotflow')}}",
]


@pytest.mark.parametrize("completion", INJECTIONS)
def test_code_injection_not_executed(completion: str) -> None:
    if os.path.exists(PWNED):
        os.remove(PWNED)
    assert grade_answer("1", completion).verdict in (UNPARSEABLE, INCORRECT)
    assert not os.path.exists(PWNED)


def test_grade_off_main_thread() -> None:
    # math-verify's default signal.alarm timeouts raise off the main thread.
    pairs = [("0.5", r"\boxed{\frac12}"), (r"2\sqrt{2}", r"\boxed{\sqrt{8}}")] * 4
    with ThreadPoolExecutor(max_workers=2) as ex:
        verdicts = [g.verdict for g in ex.map(lambda p: grade_answer(*p), pairs)]
    assert verdicts == [CORRECT] * len(pairs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),  # nested braces
        (r"\boxed{1} then \boxed{2}", "2"),  # last box wins
        (r"\boxed {3}", "3"),  # space before the brace
        (r"\fbox{4}", "4"),  # \fbox
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces are not grouping
        (r"\boxed{a\\}", "a\\\\"),  # escaped backslash before the closing brace
        (r"\boxed{\boxed{5}}", r"\boxed{5}"),  # outermost of nested boxes
        (r"\boxed{1} and \boxed{2", None),  # last box unbalanced (truncated)
        (r"\boxed{\frac{}{", None),  # unbalanced
        ("no box here", None),  # absent
        (r"\boxed 5", None),  # brace-less box is not supported
        (r"} \boxed{6} }", "6"),  # stray closers around the box
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_extract_boxed_deep_nesting_is_fast() -> None:
    n = 10_000
    text = "\\boxed{" + "{" * n + "7" + "}" * n + "}"
    start = time.perf_counter()
    assert extract_boxed(text) == "{" * n + "7" + "}" * n
    assert extract_boxed(text[:-1]) is None
    assert time.perf_counter() - start < 1.0


def test_extract_boxed_megabyte_input() -> None:
    text = "blah {x} " * 120_000 + r"\boxed{99}" + " tail" * 1000
    assert len(text) > 1_000_000
    start = time.perf_counter()
    assert extract_boxed(text) == "99"
    assert extract_boxed("x" * 1_000_000) is None
    assert extract_boxed("\\boxed{" * 150_000) is None
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 1,200 + 34 = 1,234 apples.\n#### 1,234", "1234"),  # GSM8K, commas
        ("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),  # GSM8K
        ("#### -3.5\n", "-3.5"),  # GSM8K negative decimal
        (r"So $x = \boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),  # MATH boxed
        (r"\boxed{1,2}", "1,2"),  # MATH tuple keeps its comma
        ("  7 \n", "7"),  # bare answer
    ],
)
def test_parse_reference_answer(text: str, expected: str) -> None:
    assert parse_reference_answer(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "#### ", r"\boxed{ }"])
def test_parse_reference_answer_empty(text: str) -> None:
    with pytest.raises(ValueError, match="empty reference answer"):
        parse_reference_answer(text)


@pytest.mark.parametrize(
    ("gold", "answer"),
    [("42", "４２"), ("42", "٤٢"), ("-7", "\u22127"), ("-7", "\u20137"), ("-7", "\uff0d7"),
     ("x^2+1", "\u0445^2+1"), ("42", "4\u200b2"), ("42", "\u202e24")],
)
def test_lookalikes_are_unparseable(gold: str, answer: str) -> None:
    # Fullwidth or Arabic-Indic digits, minus/dash variants, Cyrillic letters, invisible
    # characters: graded as what they are, not as the ASCII they resemble.
    assert grade_answer(gold, f"\\boxed{{{answer}}}").verdict == UNPARSEABLE


def test_adversarial_injections_not_executed_in_process(tmp_path) -> None:
    from tests.adversarial import corpus

    canary = tmp_path / "canary"
    for cat, gold, completion in corpus(canary):
        if cat == "injection":  # the others need the pool's time limit
            assert grade_answer(gold, completion).verdict in (UNPARSEABLE, INCORRECT)
    assert not canary.exists()


def test_adversarial_formats_extract_in_linear_time(tmp_path) -> None:
    """Each format's hostile text (megabytes of digits, 100k markers, unclosed tags) is
    read within the time the pool parent may spend inline; what passes on is never correct."""
    from tests.adversarial import format_corpus

    canary = tmp_path / "canary"
    for fmt, gold, completion in format_corpus(canary):
        start = time.perf_counter()
        first = triage(gold, completion, fmt)
        assert time.perf_counter() - start < 2.0, (fmt, completion[:40])
        if isinstance(first, Grade):
            assert first.verdict in (UNPARSEABLE, INCORRECT), (fmt, completion[:40], first)
        elif "touch" in completion:  # injections are quick to refuse: grade them here
            assert grade_answer(gold, completion, fmt).verdict in (UNPARSEABLE, INCORRECT)
    assert not canary.exists()

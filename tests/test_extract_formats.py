"""verify.format: how each answer format reads completions, and what they grade to."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import yaml

from cotflow.config import ConfigError, VerifyConfig, load_params
from cotflow.data.arithmetic import answer_follows, generate_problems
from cotflow.data.targets import sft_targets
from cotflow.verify.extract import FORMATS, extract_answer
from cotflow.verify.grade import CORRECT, INCORRECT, UNPARSEABLE, Grade, grade_answer
from cotflow.verify.pool import VerifierPool

ROOT = Path(__file__).resolve().parents[1]

# (completion, answer read), one table per format.
BOXED = [
    (r"so \boxed{42}.", "42"),
    (r"\boxed{1} then \fbox{2}", "2"),
    ("The answer is 42.", None),  # the case this issue is about: no box, no answer
    ("#### 42", None),
    ("<answer>42</answer>", None),
]
THINK = [
    ("<think>\n6*7=42\n</think><answer>42</answer>", "42"),
    ("<answer> 1 </answer><answer>2</answer>", "1"),  # TON's: the first tag, as the paper
    ("<answer>42", None),
    (r"\boxed{42}", None),
]
GSM8K = [
    ("6*7=42\n#### 42", "42"),
    ("#### 1,234", "1234"),  # thousands commas, as parse_reference_answer
    ("#### 1,234.50", "1234.50"),
    ("#### 5\nthen\n#### 6", "6"),  # the last marker
    ("#### 5 #### 6", "6"),  # the last marker on a line too
    ("#### 42.", "42"),  # a final full stop (lm-eval-harness ignores it)
    ("####  -3/4  \n", "-3/4"),
    ("#### \nno answer on the marker's line", None),
    ("The answer is 42.", None),
    (r"\boxed{42}", None),
]
ANSWER_TAG = [
    ("<answer>42</answer>", "42"),
    ("working... <answer> 42 </answer> done", "42"),  # anywhere, unlike TON's format
    ("<answer>1</answer> no, <answer>2</answer>", "2"),  # the last
    ("<answer>1</answer> no, <answer>2", None),  # the last one is truncated
    ("<answer></answer>", ""),  # blank: graded unparseable
    ("<think>x</think><answer>7</answer>", "7"),
    ("42", None),
]
LAST_NUMBER = [
    ("The answer is 42.", "42"),  # trailing full stop
    ("It costs $1,234.50 in all.", "1234.50"),  # dollar sign, thousands separator, cents
    ("#### 1,234", "1234"),
    ("so x = -3/4", "-3/4"),  # negative fraction
    ("half of it: .5", ".5"),
    ("x = 3.25", "3.25"),
    ("about 1.5e3 grams", "1500"),  # e-notation written out (e is not Euler's number)
    ("2.5e-3", "0.0025"),
    (r"\boxed{12} and then 13", "13"),
    ("<answer>7</answer>", "7"),
    ("no number here", None),
    ("", None),
    ("3 apples, 4 pears: 7 fruits", "7"),
    ("the items are 1,2,3", "3"),  # a list, not a thousands separator
    ("10-3", "3"),  # a minus after an operand is subtraction
    ("x2 and H2O", None),  # names, not numbers
    # The answer phrase wins over a later stray number (math-verify's anchors first).
    ("The answer is 42.\n\nQuestion: Tom has 3 apples", "42"),
    ("Final answer: 1,000,000 and then 5", "1000000"),
    ("**Answer:** $18 (for 2 days)", "18"),
    ("ANSWER: -7, since 3 - 10 = -7 and 4", "-7"),
    ("answer is 1 and answer is 2, not 3", "2"),  # the last phrase
    # ...unless the number after it starts an expression: the expression's end is the answer
    ("The answer is 3 + 4 = 7", "7"),
    ("Answer: 6 * 7 = 42", "42"),
    ("The answer is **42**.", "42"),  # bold is not multiplication
    ("The answer is forty-two, i.e. 42", "42"),
    # A look-alike beside the number reads as another number: nothing is read.
    ("The answer is \u22127", None),  # U+2212 minus sign
    ("4\u200b2", None),  # zero-width space
    ("\uff142", None),  # fullwidth 4
]
AUTO = [
    (r"\boxed{12} and then 13", "12"),  # boxed first
    (r"#### 5 \boxed{6}", "6"),
    ("work\n#### 1,234\nthen 5", "1234"),  # gsm8k before answer tags and numbers
    ("#### 5 <answer>6</answer>", "5 <answer>6</answer>"),  # gsm8k reads its whole line
    ("<answer>7</answer> and 8", "7"),  # answer tag before the last number
    ("The answer is 42.", "42"),  # last-number last
    ("so x = -3/4", "-3/4"),
    ("$1,234.50", "1234.50"),
    ("1.5e3", "1500"),
    # The first marker used decides: a broken answer there is not read by a looser format.
    (r"\boxed{1} and \boxed{2", None),  # a truncated box, not its 2
    ("<answer>12", None),  # an unclosed tag, not its 12
    (r"\boxed{} but 5", ""),  # a blank box: graded unparseable
    # A Markdown heading is not GSM8K's marker.
    ("#### Step 1\n3*4=12\n#### Final answer\nThe answer is 12.", "12"),
    ("#### **Answer**\n12 apples", "12"),
    ("#### \nthe answer is 3", "3"),  # an empty marker line marks nothing
    ("no number here", None),
]
CASES = [(fmt, text, want) for fmt, table in (
    ("boxed", BOXED), ("think", THINK), ("gsm8k", GSM8K), ("answer-tag", ANSWER_TAG),
    ("last-number", LAST_NUMBER), ("auto", AUTO)) for text, want in table]


@pytest.mark.parametrize(("fmt", "text", "want"), CASES)
def test_extraction_table(fmt: str, text: str, want: str | None) -> None:
    assert extract_answer(text, fmt) == want


def test_every_format_has_a_table_and_enough_cases() -> None:
    assert {fmt for fmt, _, _ in CASES} == set(FORMATS)
    assert len(LAST_NUMBER) >= 10 and len(AUTO) >= 10


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        extract_answer("42", "latex")


# (gold, completion, format, verdict): grading end to end through the exact path and, for
# LaTeX and tagged text, math-verify.
GRADES = [
    ("42", "The answer is 42.", "last-number", CORRECT),
    ("42", "The answer is 42.", "auto", CORRECT),
    ("42", "The answer is 42.", "boxed", UNPARSEABLE),
    ("42", "The answer is 42.", "gsm8k", UNPARSEABLE),
    ("42", "The answer is 41, not 42.", "last-number", INCORRECT),
    ("1234.5", "$1,234.50", "last-number", CORRECT),
    ("-0.75", "so x = -3/4", "auto", CORRECT),
    ("1500", "1.5e3", "last-number", CORRECT),
    ("72", "48/2 = 24 clips\n#### 72", "gsm8k", CORRECT),
    ("1234", "#### 1,234", "gsm8k", CORRECT),
    ("0.5", r"<answer>\frac{1}{2}</answer>", "answer-tag", CORRECT),
    ("1", "<answer>1}</answer>", "answer-tag", UNPARSEABLE),  # re-boxed, it would read 1
    ("12", r"\boxed{12} and then 13", "auto", CORRECT),
    ("13", r"\boxed{12} and then 13", "last-number", CORRECT),
    ("7", "The answer is \u22127", "last-number", UNPARSEABLE),  # reads as -7
]


@pytest.mark.parametrize(("gold", "completion", "fmt", "verdict"), GRADES)
def test_grade_in_format(gold: str, completion: str, fmt: str, verdict: str) -> None:
    assert grade_answer(gold, completion, fmt).verdict == verdict


def test_pool_grades_in_each_format() -> None:
    with VerifierPool(workers=1, timeout_s=5.0) as pool:
        for fmt in FORMATS:
            pairs = [(g, c) for g, c, f, _ in GRADES if f == fmt]
            assert pool.grade_many(pairs, fmt) == [grade_answer(g, c, fmt) for g, c in pairs]
        got = pool.grade_many([("42", "The answer is 42.")] * 3, "auto")
        assert got == [Grade(CORRECT, "42")] * 3


def test_warm_start_targets_are_read_back_in_each_format() -> None:
    problems = generate_problems(100, 0)
    for fmt in FORMATS:
        for p, target, _ in sft_targets(problems, fmt, dropout=0.0, seed=0):
            grade = grade_answer(p["answer"], target, fmt)
            assert grade.verdict == CORRECT, (fmt, target)
            if fmt != "think":  # the final answer line is not a step: VerIPO's check holds
                assert answer_follows(target, p["solution"], grade.extracted), (fmt, target)
    (_, target, _), = sft_targets(problems[:1], "gsm8k", dropout=0.0, seed=0)
    assert target.endswith(f"\n#### {problems[0]['answer']}")
    (_, target, _), = sft_targets(problems[:1], "answer-tag", dropout=0.0, seed=0)
    assert target.endswith(f"\n<answer>{problems[0]['answer']}</answer>")
    (_, target, _), = sft_targets(problems[:1], "auto", dropout=0.0, seed=0)
    assert target == problems[0]["solution"]


def test_config_accepts_exactly_the_formats(tmp_path: Path) -> None:
    assert get_args(VerifyConfig.model_fields["format"].annotation) == FORMATS
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert raw["verify"]["format"] == "boxed"  # the default stays
    for fmt in (*FORMATS, "latex"):
        raw["verify"]["format"] = fmt
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(raw))
        if fmt == "latex":
            with pytest.raises(ConfigError, match="verify.format"):
                load_params(path)
        else:
            assert load_params(path).verify.format == fmt

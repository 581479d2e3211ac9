"""Pull the final answer out of model completions and reference solutions.

Everything here is a linear scan (boxes with an explicit stack), so hostile inputs
(megabytes of text, thousands of nested braces) cannot blow the recursion limit or go
quadratic.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from cotflow.verify.last_number import extract_last_number
from cotflow.verify.think import ANSWER_OPEN, answer_of, answer_tag

__all__ = [
    "FORMATS",
    "extract_answer",
    "extract_answer_tag",
    "extract_boxed",
    "extract_gsm8k",
    "parse_reference_answer",
]

# How a completion states its answer (params.yaml verify.format): the last \\boxed{}; TON's
# <think>…</think><answer>…</answer> (cotflow/verify/think.py); GSM8K's `#### x`; the last
# <answer>…</answer>; the number it states last (cotflow/verify/last_number.py); or `auto`,
# the first of boxed, gsm8k, answer-tag, last-number whose marker it uses (``_auto``).
FORMATS = ("boxed", "think", "gsm8k", "answer-tag", "last-number", "auto")

# One token per match: a box opener, an escaped char (\{ \} \\ are literal text in LaTeX,
# not grouping braces), or a bare grouping brace. Order matters: openers before escapes.
_TOKEN = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[\\{}]|[{}]")
# GSM8K puts the final answer after the last "####" marker, on the marker's line.
_GSM8K_MARKER = "####"
_DIGIT = re.compile("[0-9]")
# A comma between digits followed by exactly three digits is a thousands separator.
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def extract_boxed(text: str) -> str | None:
    """Return the content of the last top-level ``\\boxed{...}`` / ``\\fbox{...}``.

    Returns None when there is no box or when the last box opened is never closed
    (a truncated generation): a half-written answer must not be graded.
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return None  # cheap exit for the common unboxed case
    depth = 0
    # Each open box is remembered as (depth of its own brace, index where content starts).
    open_boxes: list[tuple[int, int]] = []
    last: tuple[int, int] | None = None
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok[0] == "\\" and len(tok) == 2:
            continue  # escaped brace or backslash: literal text
        if tok == "}":
            if depth == 0:
                continue  # stray closer outside any group; LaTeX would error, we ignore
            depth -= 1
            if open_boxes and open_boxes[-1][0] == depth:
                _, start = open_boxes.pop()
                if not open_boxes:
                    last = (start, m.start())  # outermost box closed
            continue
        if tok != "{":
            open_boxes.append((depth, m.end()))
        depth += 1
    if open_boxes:
        return None
    return None if last is None else text[last[0] : last[1]]


def extract_gsm8k(text: str) -> str | None:
    """The rest of the line after the last ``####``, thousands commas and a full stop
    removed (lm-eval-harness ignores a final "."); None when there is no marker or nothing
    after it."""
    start = text.rfind(_GSM8K_MARKER)
    if start == -1:
        return None
    start += len(_GSM8K_MARKER)
    end = text.find("\n", start)
    answer = text[start : end if end != -1 else len(text)].strip().removesuffix(".")
    return _THOUSANDS_COMMA.sub("", answer).strip() or None


def extract_answer_tag(text: str) -> str | None:
    """The stripped content of the last ``<answer>…</answer>``, wherever it stands (TON's
    strict format is ``think``). None when the last opened tag is never closed: a truncated
    answer is not graded."""
    return answer_tag(text, last=True)


def _auto(text: str) -> str | None:
    """The answer in the first of boxed, gsm8k and answer-tag whose marker the completion
    uses (a box, ``####``, ``<answer>``), else its last number. A marked answer that is
    broken (a truncated box, an unclosed tag) is not graded, as in its own format, rather
    than read again by a looser one; a ``####`` line that starts with a letter or has no
    digit is a Markdown heading ("#### Step 2", "#### **Answer**"), not GSM8K's marker."""
    if "\\boxed" in text or "\\fbox" in text:
        return extract_boxed(text)
    gsm8k = extract_gsm8k(text)
    if gsm8k is not None and not gsm8k[0].isalpha() and _DIGIT.search(gsm8k):
        return gsm8k
    if ANSWER_OPEN in text:
        return extract_answer_tag(text)
    return extract_last_number(text)


_READERS: dict[str, Callable[[str], str | None]] = {
    "boxed": extract_boxed,
    "think": answer_of,
    "gsm8k": extract_gsm8k,
    "answer-tag": extract_answer_tag,
    "last-number": extract_last_number,
    "auto": _auto,
}


def extract_answer(text: str, fmt: str = "boxed") -> str | None:
    """The answer a completion written in format `fmt` states, or None."""
    read = _READERS.get(fmt)
    if read is None:
        raise ValueError(f"answer format {fmt!r}: expected one of {FORMATS}")
    return read(text)


def parse_reference_answer(text: str) -> str:
    """Gold answer from a reference solution (GSM8K ``#### x``, MATH ``\\boxed{x}``, or raw)."""
    if _GSM8K_MARKER in text:
        answer = extract_gsm8k(text) or ""
    else:
        boxed = extract_boxed(text)
        answer = boxed.strip() if boxed is not None else text.strip()
    if not answer:
        raise ValueError(f"empty reference answer parsed from {text[:80]!r}")
    return answer

"""Pull the final answer out of model completions and reference solutions.

Everything here is a single linear scan with an explicit stack, so hostile inputs
(megabytes of text, thousands of nested braces) cannot blow the recursion limit or go
quadratic.
"""

from __future__ import annotations

import re

__all__ = ["FORMATS", "extract_answer", "extract_boxed", "parse_reference_answer"]

# How a completion states its answer (params.yaml verify.format): the last \\boxed{}, or
# TON's <think>…</think><answer>…</answer> (cotflow/verify/think.py).
FORMATS = ("boxed", "think")

# One token per match: a box opener, an escaped char (\{ \} \\ are literal text in LaTeX,
# not grouping braces), or a bare grouping brace. Order matters: openers before escapes.
_TOKEN = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[\\{}]|[{}]")
# GSM8K puts the final answer after the last "####" marker.
_GSM8K = re.compile(r"####\s*([^\n]*)")
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


def extract_answer(text: str, fmt: str = "boxed") -> str | None:
    """The answer a completion written in format `fmt` states, or None."""
    if fmt == "boxed":
        return extract_boxed(text)
    if fmt == "think":
        from cotflow.verify.think import answer_of

        return answer_of(text)
    raise ValueError(f"answer format {fmt!r}: expected one of {FORMATS}")


def parse_reference_answer(text: str) -> str:
    """Gold answer from a reference solution (GSM8K ``#### x``, MATH ``\\boxed{x}``, or raw)."""
    matches = _GSM8K.findall(text)
    if matches:
        answer = _THOUSANDS_COMMA.sub("", matches[-1].strip())
    else:
        boxed = extract_boxed(text)
        answer = boxed.strip() if boxed is not None else text.strip()
    if not answer:
        raise ValueError(f"empty reference answer parsed from {text[:80]!r}")
    return answer

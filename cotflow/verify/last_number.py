"""verify.format ``last-number``: the number a plain-text completion states as its answer.

The rule: the number right after the last "answer is" / "answer:" phrase (any case, so "The
final answer is 42", "**Answer:** $42"), else the last number in the text. A phrase counts
only where a number follows it at once and ends there: "the answer is 3 + 4 = 7" states the
7, so that phrase is passed over for the last number.

Why a phrase wins over a later number: math-verify's ExprExtractionConfig (the reference for
what we grade) tries "final answer is"/"answer:"/"answer … X" anchors at priorities 0-200
before any bare number (300), the rightmost match within a tier; OpenAI simple-evals' MGSM
reads the last number after the last "Answer:"; lm-eval-harness's GSM8K CoT tasks report a
strict "The answer is X" match beside a flexible one, the last number of the text. We follow
math-verify with a narrower anchor (the number must follow the phrase at once, not within 50
characters), so a model that trails off into another problem ("The answer is 42.\\n\\nQ: Tom
has 3 apples") is graded on what it said its answer was.

Numbers: integers, decimals (.5 too), a leading minus, thousands separators (1,234; other
commas separate a list, whose last item is read), simple fractions a/b and e-notation
(1.5e3 is given as 1500, since the grader would read the e as Euler's number). Only ASCII
digits; a number glued to a Latin letter (x2, H2O) is a name, not a number; one touching a
look-alike character (−7, ４2, a zero-width space in 42) reads as another, and gives None.
LaTeX is not read here (\\frac{1}{2} ends on 2): such answers want ``boxed``.

Two regex scans, linear in the text: the number and the runs before it are atomic, so
nothing is scanned twice but the bounded look-arounds.
"""

from __future__ import annotations

import re
from collections import deque
from decimal import Decimal

from cotflow.verify.lookalike import LOOKALIKE

__all__ = ["extract_last_number"]

_NUMBER = (
    r"(?P<number>(?>"  # atomic: a stated number that fails the check after it is not cut short
    r"(?:(?<![\w.)\]}])(?P<sign>-))?"  # a minus after an operand is subtraction: 5-3 is 3
    # Not inside a run of digits, after a decimal point (v1.2.3) or glued to a name (x2, H2O).
    r"(?<![0-9.A-Za-z_])"
    r"(?:(?P<int>[0-9]+(?:,[0-9]+)*)"  # commas: thousands separators or a list, see _value
    r"(?:/(?P<den>[0-9]+)|(?:\.(?P<frac>[0-9]+))?(?:[eE](?P<exp>[+-]?[0-9]+))?)"
    r"|\.(?P<lead>[0-9]+))))"
)
_ANY = re.compile(_NUMBER)
# The phrase, the number at once, and no operator after it (then it starts an expression;
# `**` closes bold). Possessive runs: a number never starts with a space, colon, * $ or \.
_STATED = re.compile(
    r"\banswer(?:\s++is)?[\s:*$\\]*+" + _NUMBER + r"(?![ \t]*(?:[-+=/^×÷]|\*(?!\*)))",
    re.IGNORECASE)
_GROUPED = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+")
# e-notation is written out within these bounds; beyond them the text is kept as written.
_MAX_MANTISSA_CHARS = 64
_MAX_EXPONENT_CHARS = 2


def extract_last_number(text: str) -> str | None:
    """The stated answer of `text` (see the module's rule) as a plain number, or None."""
    # A deque of one keeps the last match while the iteration runs in C.
    last = deque(_STATED.finditer(text), maxlen=1) or deque(_ANY.finditer(text), maxlen=1)
    if not last:
        return None
    m = last[0]
    start, end = m.span("number")
    # A look-alike beside it (−7, ４2, a zero-width space) makes it read as another number.
    if start and LOOKALIKE.match(text, start - 1, start) or LOOKALIKE.match(text, end, end + 1):
        return None
    return _value(m)


def _value(m: re.Match[str]) -> str:
    sign, whole = m["sign"] or "", m["int"]
    if whole is None:
        return f"{sign}.{m['lead']}"
    if "," in whole:
        if _GROUPED.fullmatch(whole):
            whole = whole.replace(",", "")
        else:  # "1,2,3" lists its items: the last is the number the text ends on
            sign, whole = "", whole.rsplit(",", 1)[1]
    if m["den"] is not None:
        return f"{sign}{whole}/{m['den']}"
    number = sign + whole + (f".{m['frac']}" if m["frac"] else "")
    exp = m["exp"]
    if exp is None:
        return number
    if len(number) > _MAX_MANTISSA_CHARS or len(exp.lstrip("+-")) > _MAX_EXPONENT_CHARS:
        return f"{number}e{exp}"
    # Decimal from a string is exact, and "f" writes it out without an exponent.
    return format(Decimal(f"{number}e{exp}"), "f")

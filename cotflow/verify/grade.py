"""Grade one predicted answer against a gold answer.

Two tiers: a bounded exact path (numbers and simple LaTeX fractions compared as Fractions,
guards, identical strings) that is safe to run anywhere, and a math-verify path (sympy)
that can be slow on adversarial input and therefore belongs in a killable worker (see
``pool.py``). Where the exact path answers for a shape math-verify also parses, it gives
math-verify's verdict (tests/test_verify_fastpath.py checks this on a corpus); the one
deliberate difference is older: two plain numbers get no rounding credit (1/3 vs 0.333333).

Model text never reaches ``eval``/``exec``/``sympify``/``parse_expr``: we use math-verify's
LaTeX extractor only (its ``ExprExtractionConfig`` path calls ``parse_expr``), and the
LaTeX path converts text to sympy through the ANTLR grammar, whose only string-to-number
step sees lexer NUMBER tokens (digits and separators).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from cotflow.verify.extract import extract_answer
from cotflow.verify.lookalike import LOOKALIKE

__all__ = [
    "CORRECT",
    "INCORRECT",
    "UNPARSEABLE",
    "TIMEOUT",
    "TYPICAL_PAIRS",
    "Grade",
    "answer_key",
    "grade_answer",
    "grade_extracted",
    "reads_as_value",
    "triage",
    "warm_up",
]

CORRECT = "correct"
INCORRECT = "incorrect"
UNPARSEABLE = "unparseable"
TIMEOUT = "timeout"

MAX_PRED_CHARS = 1000  # longer "answers" are derivations, not answers; sympy time grows fast
MAX_NESTING = 50  # deep nesting blows ANTLR/sympy recursion and is never a real answer
_EXTRACTED_CHARS = 200  # what we keep for logging
_MAX_NUMBER_CHARS = 64  # bounds the fast path so the parent can run it inline

_DECIMAL = re.compile(r"[+-]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_FRACTION = re.compile(r"([+-]?\d+)/(\d+)")
_MAX_SHAPE_CHARS = 100  # bounds the LaTeX shapes below; real ones are far shorter
# Wrappers math-verify looks through: a nested box, a dollar sign (GSM8K answers are money).
_BOX_OPENER = re.compile(r"\\boxed\s*\{")
_DOLLAR = re.compile(r"([+-]?)\s*\\\$\s*(.*)", re.S)
# \frac{a}{b}, \dfrac, \tfrac, with integer arguments in braces or single digits (\frac12).
_INT_ARG = r"(?:\{\s*([+-]?\d+)\s*\}|(\d))"
_LATEX_FRACTION = re.compile(r"([+-]?)\s*\\[dt]?frac" + _INT_ARG + _INT_ARG)
# math-verify compares a decimal to 6 places, at 15 significant digits: values further apart
# than this (relative to their size, or 1) are unequal to it as well.
_ROUNDING_MARGIN = Fraction(1, 10**5)
_WS = re.compile(r"\s+")
_OPENERS = frozenset("({[")
_CLOSERS = frozenset(")}]")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grade:
    verdict: str
    extracted: str | None


def _as_number(text: str) -> Fraction | None:
    """Exact value of a plain number (int, decimal, a/b, thousands commas), else None."""
    s = text.strip()
    if len(s) > _MAX_NUMBER_CHARS:
        return None
    if _DECIMAL.fullmatch(s):
        return Fraction(s.replace(",", ""))
    m = _FRACTION.fullmatch(s)
    if m and int(m.group(2)) != 0:
        return Fraction(int(m.group(1)), int(m.group(2)))
    return None


def _exact_value(text: str) -> tuple[Fraction, bool] | None:
    """(value, written with a decimal point) of a number or simple LaTeX fraction, else None.

    Shapes: plain numbers (``_as_number``), ``\\frac{a}{b}`` and its variants with signs,
    inside ``\\boxed{}`` and after ``\\$``. Anything else is math-verify's to read.
    """
    s = text.strip()
    if len(s) > _MAX_SHAPE_CHARS:
        return None
    for _ in range(4):  # peel a few wrappers; deeper stacks are left to math-verify
        if (m := _BOX_OPENER.match(s)) and s.endswith("}") and _balanced(s[m.end():-1]):
            s = s[m.end():-1].strip()
        elif m := _DOLLAR.fullmatch(s):
            s = m.group(1) + m.group(2).strip()
        else:
            break
    if (value := _as_number(s)) is not None:
        return value, "." in s
    m = _LATEX_FRACTION.fullmatch(s)
    if m is None:
        return None
    sign, num, den = m.group(1), int(m.group(2) or m.group(3)), int(m.group(4) or m.group(5))
    if den == 0:
        return None  # math-verify reads 3/0 as complex infinity: its call
    return Fraction(-num if sign == "-" else num, den), False


def answer_key(answer: str | None) -> str | None:
    """A canonical form of an extracted answer, for majority voting: the exact value of a
    number or simple fraction (``3``, ``3.0``, ``\\boxed{3}`` and ``\\$3`` are all ``3``;
    ``0.5`` and ``\\frac12`` are ``1/2``), else the text with its whitespace collapsed.
    None for no answer or a blank one. Bounded time, like the exact path it reuses."""
    if answer is None or not answer.strip():
        return None
    exact = _exact_value(answer)
    return str(exact[0]) if exact is not None else _WS.sub(" ", answer.strip())


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        if depth < 0:
            return False  # "\\boxed{1}{2}" is not one box
    return depth == 0


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif ch in _CLOSERS and depth:
            depth -= 1
    return deepest


def _fast_grade(gold: str, pred: str) -> Grade | None:
    """Bounded-time verdict, or None when math-verify is needed."""
    shown = pred[:_EXTRACTED_CHARS]
    if not pred.strip() or len(pred) > MAX_PRED_CHARS or LOOKALIKE.search(pred):
        return Grade(UNPARSEABLE, shown)
    g, p = _as_number(gold), _as_number(pred)
    if g is not None and p is not None:
        return Grade(CORRECT if g == p else INCORRECT, shown)
    if _nesting_depth(pred) > MAX_NESTING:
        return Grade(UNPARSEABLE, shown)
    # Identical text is correct whatever it means; also covers answers sympy cannot parse.
    if _WS.sub(" ", gold.strip()) == _WS.sub(" ", pred.strip()):
        return Grade(CORRECT, shown)
    gv, pv = _exact_value(gold), _exact_value(pred)
    if gv is None or pv is None:
        return None
    (g_val, g_decimal), (p_val, p_decimal) = gv, pv
    if g_val == p_val:
        return Grade(CORRECT, shown)
    if not (g_decimal or p_decimal):
        return Grade(INCORRECT, shown)  # math-verify compares integers and ratios exactly
    if abs(g_val - p_val) > _ROUNDING_MARGIN * max(1, abs(g_val), abs(p_val)):
        return Grade(INCORRECT, shown)
    return None  # close to a decimal: math-verify's rounding credit decides


def triage(gold: str, completion: str, fmt: str = "boxed") -> Grade | str:
    """Cheap part of grading: a final Grade, or the extracted answer still to be verified.
    `fmt` says where the answer is (``extract_answer``).

    Runs in linear time in ``len(completion)``, so the pool parent can call it inline.
    """
    pred = extract_answer(completion, fmt)
    if pred is None:
        return Grade(UNPARSEABLE, None)
    if fmt != "boxed" and not _balanced(pred):
        # Re-boxed for math-verify, a tagged "1}" would read as 1.
        return Grade(UNPARSEABLE, pred[:_EXTRACTED_CHARS])
    fast = _fast_grade(gold, pred)
    return pred if fast is None else fast


def _math_verify() -> Any:
    # Imported lazily: the pool parent only triages and should not pay for sympy.
    import math_verify

    from cotflow.verify.sll import install

    install()  # idempotent; SLL-first parsing gives the same trees, ~3x sooner
    return math_verify


def _parse(latex_answer: str) -> list[Any]:
    mv = _math_verify()
    return mv.parse(
        "\\boxed{" + latex_answer + "}",  # re-box so the LaTeX extractor anchors on it
        extraction_config=[mv.LatexExtractionConfig(boxed_match_priority=0)],
        fallback_mode="no_fallback",  # otherwise an unparsed string comes back as "parsed"
        parsing_timeout=None,  # signal.alarm: main-thread only; the pool enforces time
    )


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple[Any, ...]:
    # Cached: RL groups grade many samples against the same gold answer.
    try:
        return tuple(_parse(gold))
    except Exception:
        return ()


def reads_as_value(gold: str) -> bool:
    """Whether a gold answer is a value the verifier compares by meaning: a number or simple
    fraction, or LaTeX math-verify parses. Trusted text only (no time limit): a dataset's
    answers, never a completion. Prose passes math-verify as a product of letters, so a
    caller that meets prose must tell it apart first (cotflow/data/champ.py does)."""
    return _exact_value(gold) is not None or bool(_parse_gold(gold))


def grade_extracted(gold: str, pred: str) -> Grade:
    """Grade an already extracted answer (no time limit; see ``VerifierPool``)."""
    fast = _fast_grade(gold, pred)
    return fast if fast is not None else _math_verify_grade(gold, pred)


def _math_verify_grade(gold: str, pred: str) -> Grade:
    """math-verify's verdict alone (the exact path's agreement tests compare against it)."""
    shown = pred[:_EXTRACTED_CHARS]
    try:
        parsed = _parse(pred)
    except Exception:  # includes MemoryError and RecursionError from the parser
        return Grade(UNPARSEABLE, shown)
    if not parsed:
        return Grade(UNPARSEABLE, shown)
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        log.debug("gold answer %r is not parseable by math-verify", gold[:80])
        return Grade(INCORRECT, shown)
    try:
        ok = _math_verify().verify(list(gold_parsed), parsed, timeout_seconds=None)
    except Exception:
        ok = False
    return Grade(CORRECT if ok else INCORRECT, shown)


def grade_answer(gold: str, completion: str, fmt: str = "boxed") -> Grade:
    """Grade the answer of ``completion`` (its last ``\\boxed{}``, or in format `fmt`)
    against ``gold``.

    Thread-safe and signal-free, but has no time limit of its own: use ``VerifierPool``
    for untrusted completions.
    """
    first = triage(gold, completion, fmt)
    return first if isinstance(first, Grade) else grade_extracted(gold, first)


# Typical (gold, answer) shapes, MATH-style. Grading them once fills ANTLR's shared
# prediction cache and runs sympy's first-call set-up (simplify, sets, relations), up to
# 0.6 s each on a cold process; the pool's fork server does it once (``preload.py``), so
# every worker it forks, replacements for killed ones too, starts warm.
TYPICAL_PAIRS = (
    ("1", "1"), (r"\frac{3}{4}", "0.75"), (r"-\dfrac{5}{2}", "-2.5"), ("0.5", "1,000"),
    (r"2\sqrt{3}", r"\sqrt{12}"), (r"\frac{\sqrt{3}}{2}", r"\frac{\sqrt{3}}{3}"),
    (r"\{1,2\}", r"\{2, 1\}"), (r"[1,5)", r"[1, 5]"), (r"(-\infty, 2]", r"x \le 2"),
    (r"(0,1) \cup (2,3)", r"(1, 2)"), (r"x^2+3", r"3+x^2"), (r"2x-1", r"-1+2x"),
    (r"x = 3", "3"), (r"y = 2x + 1", r"y = 1 + 2x"), (r"\text{(B)}", "B"),
    (r"\text{Monday}", r"\text{Tuesday}"), ("12", r"12\text{ cm}"), ("30", r"30^\circ"),
    (r"\frac{\pi}{3}", r"3\pi"), ("1", r"\sin^2 x + \cos^2 x"), (r"e^{2}", r"\log_2 8"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}"),
    (r"3+4i", r"4i+3"),
)


def warm_up(pairs: Iterable[tuple[str, str]] = (("1", "1"),)) -> None:
    """Import math-verify and load the ANTLR parser (and warm its and sympy's caches, by
    grading ``pairs``) so that the first real items are not slow."""
    for gold, answer in pairs:
        try:
            _math_verify_grade(gold, answer)
        except Exception:  # a warm-up miss only costs speed
            log.debug("warm-up pair %r, %r failed", gold, answer)

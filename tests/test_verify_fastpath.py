"""The grader's shortcuts change time, never verdicts.

Two shortcuts: the exact path (numbers and simple LaTeX fractions, decided without sympy,
in the pool's parent) and SLL-first ANTLR parsing (cotflow/verify/sll.py). Each is checked
against math-verify alone on a corpus of answer shapes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest

from cotflow.verify import grade
from cotflow.verify.grade import CORRECT, INCORRECT, TYPICAL_PAIRS

# (gold, answer): shapes the exact path reads, and near misses it must leave to math-verify.
EDGE_CASES = [
    ("1/2", r"\frac{1}{2}"), (r"\frac{1}{2}", "0.5"), ("0.5", r"\frac{1}{2}"),
    (r"\frac{1}{2}", r"\frac{2}{4}"), (r"\frac{1}{2}", r"\frac12"), (r"\frac{1}{2}", r"\dfrac12"),
    (r"\frac{1}{2}", r"\tfrac{1}{2}"), (r"\frac{1}{2}", r"\frac1{2}"),
    (r"\frac{1}{2}", r"\frac{1}2"),
    (r"\frac{1}{2}", r"\frac{ 1 }{ 2 }"), (r"\frac{1}{2}", r"\frac{+1}{2}"),
    (r"\frac{1}{2}", r"\frac{1}{+2}"), (r"-\frac{1}{2}", r"\frac{1}{-2}"),
    (r"-\frac{1}{2}", r"\frac{-1}{2}"), (r"\frac{1}{2}", r"-\frac{-1}{2}"),
    (r"\frac{1}{2}", r"+\frac{1}{2}"), (r"\frac{1}{2}", r"- \frac{1}{2}"),
    ("-0.5", r"-\frac{1}{2}"),
    ("2", r"\frac{4}{2}"), (r"\frac{24}{2}", "12"), ("3", r"\frac{3}{1}"), ("2", r"\frac{3}{2}"),
    (r"\frac{3}{4}", r"\frac{4}{3}"), ("0.75", r"\frac{3}{4}"), ("2.50", r"\frac{5}{2}"),
    (r"\frac{10}{4}", "2.5"), ("1/2", "0.5"), ("-1/2", r"\frac{-1}{2}"), ("0", "-0"),
    ("5", r"\boxed{5}"), (r"\boxed{5}", "5"), ("5", r"\boxed{\boxed{5}}"), ("5", r"\boxed{ 5 }"),
    ("5", r"\$5"), (r"\$5", "5"), ("5", r"\$5.00"), ("5.5", r"\$5.50"), ("5", r"\$ 5"),
    ("5", r"\$\boxed{5}"), ("5", r"\boxed{\$5}"), ("-5", r"-\$5"), ("-5", r"\$-5"),
    ("6", r"\$5"), ("1000", "1,000"), ("1,000", r"\frac{2000}{2}"), ("007", "7"),
    # Decimal against a fraction, unequal: math-verify gives 6-place rounding credit.
    ("0.333333", r"\frac{1}{3}"), ("0.3333333", r"\frac{1}{3}"), ("0.333", r"\frac{1}{3}"),
    (r"\frac{1}{3}", "0.333333"), (r"\frac{2}{3}", "0.67"),
    # Shapes the exact path does not read (math-verify's call).
    ("0.5", r"\frac{1}{2.}"), ("0.5", r"\frac{1.0}{2}"), ("2", r"\frac{1,000}{500}"),
    ("3", r"\frac{3}{0}"), (r"\frac{3}{0}", "3"), ("50", r"50\%"), ("0.5", r"50\%"),
    ("1000", r"1\,000"), ("1000", "1{,}000"), ("100", "1e2"), ("5", "5."), ("-5", "- 5"),
    ("12", r"12\text{ cm}"), ("1/-2", "-0.5"), ("-5", r"-\$-5"), (r"\frac{1}{2}", r"\frac 12"),
]

_FINITE_DENOMINATORS = (1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100)


def _forms(v: Fraction, rng: random.Random) -> Iterator[str]:
    """Ways a model or a reference writes the number ``v``."""
    p, q = v.numerator, v.denominator
    sign = "-" if v < 0 else ""
    if q == 1:
        yield str(p)
        if abs(p) >= 1000:
            yield f"{p:,}"
    if q in _FINITE_DENOMINATORS:
        digits = {1: 0, 2: 1, 4: 2, 5: 1, 8: 3, 10: 1, 20: 2, 25: 2, 40: 3, 50: 2, 100: 2}[q]
        yield f"{float(v):.{digits + rng.randint(0, 2)}f}"  # trailing zeros now and then
    k = rng.randint(1, 3)  # unreduced forms too
    yield f"{p * k}/{q * k}"
    cmd = rng.choice([r"\frac", r"\dfrac", r"\tfrac"])
    yield f"{sign}{cmd}{{{abs(p) * k}}}{{{q * k}}}"
    yield f"{cmd}{{{p * k}}}{{{q * k}}}"
    yield f"{cmd}{{{abs(p)}}}{{{-q}}}" if v < 0 else f"{cmd}{{{-p}}}{{{-q}}}"
    if abs(p) < 10 and q < 10 and v > 0:
        yield rf"\frac{p}{q}"
    form = rng.choice([str(p), f"{p}/{q}", rf"\frac{{{p}}}{{{q}}}"])
    yield rf"\boxed{{{form}}}"
    if v >= 0 and q == 1:
        yield rf"\${p}"


def generated_pairs(n: int = 60, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        v = Fraction(rng.randint(-300, 3000), rng.choice(_FINITE_DENOMINATORS + (3, 7, 12)))
        wrong = rng.choice([v + 1, 2 * v + 1, -v - 1, v + Fraction(1, 7), 1 / v if v else v + 2])
        golds = list(_forms(v, rng))
        for pred_value in (v, wrong):
            preds = list(_forms(pred_value, rng))
            for _ in range(3):
                pairs.append((rng.choice(golds), rng.choice(preds)))
    return pairs


def rounded_pairs() -> list[tuple[str, str]]:
    """LaTeX fractions against their decimals at 2-9 places: around math-verify's 6-place
    rounding credit, where the exact path must answer only when it is sure."""
    pairs = []
    for p, q in [(1, 3), (2, 7), (-5, 6), (22, 7), (1, 10**6 + 1), (10**6 + 1, 3),
                 (10**9 + 1, 7), (123456789, 1000)]:
        for places in range(2, 10):
            with localcontext(prec=60):  # exact enough: no float in the way
                decimal = str((Decimal(p) / q).quantize(Decimal(1).scaleb(-places)))
            pairs += [(rf"\frac{{{p}}}{{{q}}}", decimal), (decimal, rf"\dfrac{{{p}}}{{{q}}}")]
    return pairs


CORPUS = EDGE_CASES + generated_pairs() + rounded_pairs()


@pytest.mark.parametrize(("gold", "answer"), CORPUS)
def test_exact_path_agrees_with_math_verify(gold: str, answer: str) -> None:
    fast = grade._fast_grade(gold, answer)
    if fast is not None:
        assert fast.verdict == grade._math_verify_grade(gold, answer).verdict


def test_exact_path_reads_the_common_shapes() -> None:
    generated = generated_pairs()
    answered = [grade._fast_grade(g, a) for g, a in generated]
    verdicts = {f.verdict for f in answered if f is not None}
    assert verdicts == {CORRECT, INCORRECT}
    assert sum(f is not None for f in answered) > 0.9 * len(generated)
    for gold, answer in EDGE_CASES[:EDGE_CASES.index(("0.333333", r"\frac{1}{3}"))]:
        assert grade._fast_grade(gold, answer) is not None, (gold, answer)


def test_exact_path_leaves_rounding_credit_to_math_verify() -> None:
    # A decimal against a LaTeX fraction, unequal: math-verify rounds to 6 places.
    assert grade._fast_grade("0.333333", r"\frac{1}{3}") is None
    assert grade.grade_extracted("0.333333", r"\frac{1}{3}").verdict == CORRECT
    assert grade.grade_extracted("0.333", r"\frac{1}{3}").verdict == INCORRECT
    # The older, deliberate difference: two plain numbers are compared exactly.
    assert grade.grade_extracted("1/3", "0.333333").verdict == INCORRECT
    assert grade._math_verify_grade("1/3", "0.333333").verdict == CORRECT


# LaTeX the parser meets: MATH-style answers (some need full-context LL prediction, such as
# polynomials in x), malformed text, and short hostile input.
PARSER_CORPUS = sorted({s for pair in TYPICAL_PAIRS + tuple(EDGE_CASES) for s in pair} | {
    r"\sqrt{8}", r"2\sqrt{2}", r"\sqrt[3]{2}", r"\frac{\sqrt{3}}{2}", r"\{1,2\}", r"\{2,1\}",
    r"[0,1)", r"(0,1]", r"(-\infty,2]", r"(1,2)", r"[1, 2) \cup (3, \infty)", r"x^2+1",
    r"1+x^2", r"x^2-5x+6", r"(x-2)(x-3)", r"\sin(x)^2+\cos(x)^2", r"x = 3", r"y=2x+3",
    r"3 < x \le 5", r"x > -2", r"\text{Monday}", r"\text{(B)}", "B", r"10\text{ cm}",
    r"30^\circ", r"\pi", r"2\pi", r"\frac{\pi}{3}", r"3.14", r"e^{i\pi}", r"3+4i",
    r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\binom{5}{2}", "5!", r"\infty",
    r"\emptyset", r"1.2 \times 10^{3}", r"\log_2 8", r"\ln 2", r"|x-1|", r"a+b+c",
    r"\dfrac{3}{4}", r"-\frac{7}{2}", r"0.75", "1,000", "1{,}000", r"\frac{}{}", r"\frac{1}{",
    r"\left( 1", r"\sqrt[", "^^^^", "((((1))))", "-" * 40 + "1", r"\frac{1}{2}" * 20,
    "__import__('os').system('true')", "lambda x: x", r"\operatorname{eval}(1)", "x" * 200,
})


def _parse_outcomes(strings: list[str]) -> list[str]:
    import math_verify.parser as mvp
    from sympy import srepr

    mvp.parse_latex_cached.cache_clear()  # its answers would hide the parser under test
    mvp.extract_latex.cache_clear()
    out = []
    for s in strings:
        try:
            out.append(repr([srepr(x) if not isinstance(x, str) else x for x in grade._parse(s)]))
        except Exception as err:  # noqa: BLE001 - failing the same way is agreeing
            out.append(f"error: {type(err).__name__}")
    return out


def test_sll_first_parsing_is_installed() -> None:
    from cotflow.verify.sll import installed

    grade._math_verify()
    assert installed()


def test_sll_first_parsing_gives_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    grade._math_verify()
    two_stage = _Latex2Sympy.create_parser
    fast = _parse_outcomes(PARSER_CORPUS)
    monkeypatch.setattr(_Latex2Sympy, "create_parser", two_stage.__wrapped__)  # LL only
    slow = _parse_outcomes(PARSER_CORPUS)
    assert sum(not o.startswith("error") for o in slow) > len(PARSER_CORPUS) // 2
    assert dict(zip(PARSER_CORPUS, fast, strict=True)) == dict(
        zip(PARSER_CORPUS, slow, strict=True))


def test_warm_up_pairs_all_grade() -> None:
    # A pair that fails to parse would warm nothing up.
    for gold, answer in TYPICAL_PAIRS:
        assert grade._math_verify_grade(gold, answer).verdict in (CORRECT, INCORRECT)

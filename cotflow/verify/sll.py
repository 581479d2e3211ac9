"""Two-stage ANTLR parsing for math-verify's LaTeX parser: SLL first, full LL on failure.

latex2sympy's generated parser runs in ANTLR's default LL mode, whose full-context
prediction is recomputed on every parse and is most of a grade's time (profiled: ~95 % of
the worker's CPU on typical MATH answers). ANTLR documents that SLL prediction "will either
return a correct parse tree (the same parse tree that would be returned with the LL
prediction mode), or it will report a syntax error", so the standard two-stage strategy
parses in SLL, and reparses from scratch, exactly as before, whenever SLL reports anything.
Verdicts do not change (tests/test_verify_fastpath.py compares both modes on a corpus);
only time does.

This touches one private method of latex2sympy2_extended (``_Latex2Sympy.create_parser``);
if a release renames it, ``install`` leaves the parser as it is (correct, just slower) and
the test that asserts the patch is active fails.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["install", "installed"]

log = logging.getLogger(__name__)

_MARK = "_cotflow_two_stage"


class _SLLFailed(Exception):
    """SLL could not parse: the input is wrong, or needs full-context prediction."""


def _bail_listener() -> Any:
    from antlr4.error.ErrorListener import ErrorListener

    class Bail(ErrorListener):  # type: ignore[misc]
        def syntaxError(self, *args: Any) -> None:
            raise _SLLFailed

    return Bail()


def install() -> bool:
    """Make latex2sympy parse SLL-first. Idempotent; False when it could not be installed."""
    try:
        from antlr4.atn.PredictionMode import PredictionMode
        from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy
    except ImportError:
        return False
    original = getattr(_Latex2Sympy, "create_parser", None)
    if original is None:
        log.warning("latex2sympy has no create_parser: LaTeX parsing stays LL-only (slower)")
        return False
    if getattr(original, _MARK, False):
        return True
    bail = _bail_listener()

    def create_parser(self: Any, latex_str: str) -> Any:
        parser = original(self, latex_str)
        sll_math = parser.math  # bound before the instance attribute below shadows it

        def math() -> Any:
            parser._listeners = [bail]  # any syntax error ends the SLL attempt at once
            parser._interp.predictionMode = PredictionMode.SLL
            try:
                return sll_math()
            except Exception:
                # _SLLFailed, or a lexer, recursion or memory error on the way: a fresh
                # LL parser reproduces the original outcome, whatever it was.
                pass
            return original(self, latex_str).math()

        parser.math = math  # the one parser entry point latex2sympy calls
        return parser

    setattr(create_parser, _MARK, True)
    create_parser.__wrapped__ = original  # type: ignore[attr-defined]  # LL only, for tests
    _Latex2Sympy.create_parser = create_parser
    return True


def installed() -> bool:
    """Whether latex2sympy currently parses SLL-first."""
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    return bool(getattr(getattr(_Latex2Sympy, "create_parser", None), _MARK, False))

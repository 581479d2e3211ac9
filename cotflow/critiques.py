"""Critique texts and the refinement prompt of Critique-GRPO (pure, standard library).

Zhang et al., arXiv 2506.03106; specs/algorithms-a.md §3.2-3.3. Critique types:

    indicative     the verdict only ("The generated solution is correct/incorrect.")
    indicative_gt  the verdict and the ground truth (the released script's default)
    cot            a step-by-step critique: on the built-in task the task's own critic
                   (cotflow/data/arithmetic_critic.py), else an LM critic whose output must
                   end with the marker, else `indicative_gt`
    self           the policy critiques itself (the LM critic's format), else `indicative_gt`

`wording` "terse" keeps the sentences short for the tiny character-level model, whose
refinement prompt must fit 256 positions; "paper" is the released code's phrasing.
Model output is untrusted: it is only searched for the marker, never evaluated.
"""

from __future__ import annotations

import re

CRITIQUE_TYPES = ("indicative", "indicative_gt", "cot", "self")
WORDINGS = ("terse", "paper")
MARKER = "[END]"
# The spec's closing line, "Conclusion: wrong [END]" (or right), without the marker.
_CONCLUSION = re.compile(r"\s*conclusion:\s*(right|wrong)\s*$", re.IGNORECASE)


def indicative(correct: bool, wording: str) -> str:
    _check_wording(wording)
    if wording == "terse":
        return "Correct." if correct else "Wrong."
    return f"The generated solution is {'correct' if correct else 'incorrect'}."


def indicative_gt(correct: bool, answer: str, wording: str) -> str:
    _check_wording(wording)
    if wording == "terse":
        return f"{'Correct' if correct else 'Wrong'}; the answer is {answer}."
    return (f"The generated solution is {'correct' if correct else 'incorrect'}, "
            f"the ground truth is {answer}.")


def _check_wording(wording: str) -> None:
    if wording not in WORDINGS:
        raise ValueError(f"critique wording {wording!r}: unknown (have {', '.join(WORDINGS)})")


def parse_critic(text: str) -> str | None:
    """The critique in an LM critic's output, or None when malformed: it must end with the
    marker (an unfinished or rambling output does not), and say something before it."""
    body = text.rstrip()
    if not body.endswith(MARKER):
        return None
    body = _CONCLUSION.sub("", body[: -len(MARKER)]).strip()
    return body or None


def fill(template: str, where: str, **fields: str) -> str:
    """`template` with its {field}s filled: str.format, with a clear error naming `where`
    for an unknown field. The values (model output among them) are inserted, never parsed."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"{where}: template {template!r} is not fillable with "
                         f"{{{'}, {'.join(fields)}}}: {err!r}") from None

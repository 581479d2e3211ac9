"""`data.source: champ`: the 270 competition problems of CHAMP (package champ-dataset, the
`data` extra), an evaluation set: it has a test split only.

The package stores one JSON file, champ_dataset/dataset_files/v0.json: `problems` maps an
id (P_Combinatorics_1) to its `category` (Combinatorics, Inequality, Number-Theory,
Polynomial, Sequence), its text, its `solution` steps and a free-text answer, math between
`@@` markers (`_raw_*`; `_text`/`_answer` drop the markers). A record takes the id, the text,
the steps as the solution, the category as `subject` (`cotflow eval` groups by it) and
difficulty 0.

Many answers are prose ("No", "0 is the only possible value", "376 and 625"), which the
verifier cannot grade (math-verify reads prose as a product of letters). An answer is kept
when it is a number or one `@@math@@` span the verifier parses, alone, followed by a unit
word, "is the only possible value" or a parenthesised remark ("98 values", "900 (i.e., all
values)"), stated as a limit ("The limit exists and is equal to 3"), or as two equivalent
forms ("@@C(10, 5)@@, or equivalently @@252@@": the second, else the first): the number or
span is the answer. The rest (yes/no, several values, other prose) are skipped, counted by
reason and reported as a warning on every load, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from functools import cache
from importlib import resources

from cotflow.data.errors import DataError
from cotflow.data.packages import import_for

SOURCE = "champ"
SPLITS = ("test",)
_FILE = "dataset_files/v0.json"
# A value (a whole number or one @@math@@ span), then at most a unit word, "is the only
# possible value" or a remark in parentheses.
_VALUE_FIRST = re.compile(
    r"(?P<value>-?\d+|@@[^@]+@@)"
    r"(?:\s+is the only possible value|\s+[A-Za-z-]+|\s*\([^()]*\))?"
)
# Prose around one value: the value is the answer.
_STATED = re.compile(
    r"(?:The limit exists and is equal to|The only possible value for the "
    r"limit is)\s+(?P<value>-?\d+|@@[^@]+@@)"
)
# Two forms of one value: the one the verifier reads, the second first (often the simpler).
_EQUIVALENT = re.compile(r"(?P<first>@@[^@]+@@|-?\d+), or equivalently (?P<second>@@[^@]+@@|-?\d+)")
_YES_NO = {"yes", "no"}
# CHAMP writes a binomial C(n, k); the verifier reads LaTeX's \binom.
_BINOMIAL = re.compile(r"\bC\(([^(),]+),\s*([^(),]+)\)")

log = logging.getLogger(__name__)


def answer_of(raw_answer: str) -> tuple[str | None, str]:
    """(the gold answer, or None when skipped; why: number, expression or a skip reason)."""
    from cotflow.verify.grade import reads_as_value

    text = raw_answer.strip()
    if match := _VALUE_FIRST.fullmatch(text) or _STATED.fullmatch(text):
        candidates = [match.group("value")]
    elif match := _EQUIVALENT.fullmatch(text):
        candidates = [match.group("second"), match.group("first")]
    else:
        return None, "yes/no" if text.lower() in _YES_NO else "prose or several values"
    for value in candidates:
        if not value.startswith("@@"):
            return value, "number"
        value = _BINOMIAL.sub(r"\\binom{\1}{\2}", value.strip("@").strip())
        if reads_as_value(value):
            return value, "expression"
    return None, "math the verifier cannot parse"


def champ_rows() -> tuple[tuple[dict, ...], tuple[tuple[str, int], ...]]:
    """(every problem with a gradable answer as a record, in the file's order; the number
    skipped per reason)."""
    import_for(SOURCE, "champ_dataset", "champ-dataset")
    return _read()


@cache  # the file is 72 MB, mostly recorded model conversations
def _read() -> tuple[tuple[dict, ...], tuple[tuple[str, int], ...]]:
    path = resources.files("champ_dataset") / _FILE
    try:
        problems = json.loads(path.read_text(encoding="utf-8"))["problems"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"champ: cannot read {_FILE} of champ-dataset: {err}") from err
    rows, skipped = [], Counter()
    for pid, p in problems.items():
        answer, kind = answer_of(p["_raw_answer"])
        if answer is None:
            skipped[kind] += 1
            continue
        steps = (p.get("solution") or {}).get("steps") or []
        rows.append(
            {
                "id": pid,
                "question": p["_text"].strip(),
                "solution": "\n".join(s["_text"].strip() for s in steps),
                "answer": answer,
                "difficulty": 0,
                "subject": p["category"],
            }
        )
    return tuple(rows), tuple(sorted(skipped.items()))


def load_champ(split: str, n: int | None = None) -> list[dict]:
    """The first `n` (None: all) gradable problems of the test split, copies; a warning
    says how many were skipped and why."""
    from cotflow.data.sources import validate_rows

    if split not in SPLITS:
        raise DataError(f"split {split!r}: champ is an evaluation set with the split test only")
    rows, skipped = champ_rows()
    if skipped:
        total = len(rows) + sum(count for _, count in skipped)
        log.warning(
            "champ: %d of %d problems kept; skipped %d whose answer the verifier cannot grade (%s)",
            len(rows),
            total,
            total - len(rows),
            ", ".join(f"{count} {why}" for why, count in skipped),
        )
    out = [dict(r) for r in rows[:n]]
    validate_rows(out, SOURCE)
    return out

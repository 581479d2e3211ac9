"""A reasoning-gym task's own scorer beside cotflow's verifier: where do they disagree?

Each task scores an extracted answer with `score_answer(answer, entry) -> float`: 1.0 right,
0 wrong, and on some tasks partial credit (an answer that contains the right one). The
pipeline's reward is the verifier's (cotflow/verify/scoring.py), which reads the value: the
two agree on an answer when the scorer gives 1.0 exactly where the verifier says correct.
`compare` tells, per answer, and the data stage reports the agreement on `probe_answers`
of its held-out problems (the answer written as models write it: with a decimal point,
thousands commas, a sign), so a task whose scorer wants the exact string shows it.

The scorers are the task's code, and several pass the answer to sympy's `sympify` or to
`eval` (countdown, puzzle24, polynomial_multiplication, ...). So they run here only on
answers we write, never on model output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cotflow.data.errors import DataError
from cotflow.data.gym import make_dataset, task_of

if TYPE_CHECKING:
    from cotflow.data_config import ReasoningGymConfig


@dataclass(frozen=True)
class Comparison:
    """One answer to one problem, graded both ways."""

    id: str
    answer: str
    score: float  # the task's scorer
    verdict: str  # cotflow's verifier (cotflow/verify/grade.py)

    @property
    def agrees(self) -> bool:
        from cotflow.verify.grade import CORRECT

        return (self.score == 1.0) == (self.verdict == CORRECT)


def _index(record: dict, source: str, seed: int) -> int:
    prefix = f"{task_of(source)}-{seed}-"
    rest = record["id"].removeprefix(prefix)
    if rest == record["id"] or not rest.isdigit():
        raise DataError(
            f"{record['id']!r}: not a problem of {source} with data.reasoning_gym.seed {seed}"
        )
    return int(rest)


def compare(
    source: str, settings: ReasoningGymConfig, records: Sequence[dict], answers: Sequence[str]
) -> list[Comparison]:
    """Each record's answer from `answers` (one per record, already extracted, as the
    verifier's `extract_answer` would give it) graded by the task's scorer and by the
    verifier. The scorer gets the entry the record was made from, generated again: a record
    of other settings is refused. Trusted answers only (see the module's note)."""
    from cotflow.verify.grade import grade_extracted

    if len(records) != len(answers):
        raise ValueError(f"{len(records)} records but {len(answers)} answers")
    dataset = make_dataset(source, settings)
    out = []
    for record, answer in zip(records, answers, strict=True):
        entry = dataset[_index(record, source, settings.seed)]
        if entry["question"] != record["question"]:
            raise DataError(
                f"{record['id']!r}: its question is not the one these "
                "data.reasoning_gym settings generate"
            )
        score = float(dataset.score_answer(answer, entry))
        out.append(
            Comparison(
                record["id"], answer, score, grade_extracted(record["answer"], answer).verdict
            )
        )
    return out


def probe_answers(gold: str) -> list[str]:
    """The gold answer and, for a whole number, the same value as models also write it
    (`42.0`, `+42`, `1,234`) and a wrong one (`43`)."""
    probes = [gold]
    try:
        value = int(gold)
    except ValueError:
        return probes
    probes += [f"{value}.0", f"{value + 1}"]
    if value > 0:
        probes.append(f"+{value}")
    if abs(value) >= 1000:
        probes.append(f"{value:,}")
    return probes


def agreement_stats(
    source: str, settings: ReasoningGymConfig, records: Sequence[dict]
) -> dict[str, float]:
    """How often the scorer and the verifier agree on `probe_answers` of `records`: overall,
    on the gold answers alone, and the number of probes."""
    pairs = [(r, a) for r in records for a in probe_answers(r["answer"])]
    if not pairs:
        return {}
    results = compare(source, settings, [r for r, _ in pairs], [a for _, a in pairs])
    gold = [c for c, (r, a) in zip(results, pairs, strict=True) if a == r["answer"]]
    return {
        "scorer_agreement": round(sum(c.agrees for c in results) / len(results), 6),
        "scorer_agreement_gold": round(sum(c.agrees for c in gold) / len(gold), 6),
        "scorer_probes": len(results),
    }

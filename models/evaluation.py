"""Evaluating a policy on held-out problems: greedy accuracy, pass@k, completion length.

Shared by the baseline stage (the warm start's metrics) and the evaluate stage (each
iteration's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotflow.algorithms.metrics import pass_at_k
from cotflow.algorithms.ton import completion_stats, per_level
from cotflow.config import PipelineConfig
from cotflow.records import write_json, write_table
from cotflow.verify.grade import CORRECT, Grade
from models.sampler import Completion


def record_evaluation(cfg: PipelineConfig, policy: Path, problems: list[dict], iteration: int,
                      *, evaluation: Path, metrics: Path, curve: Path,
                      earlier: list[dict[str, Any]]
                      ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """`evaluate_policy`, then its records: per problem to `evaluation`, the metrics to
    `metrics` (with `iteration`), and to `curve` the `earlier` points plus this one (the
    previous folder's curve: so a curve depends on nothing its stage does not declare).
    Returns (metrics, timing, the curve's points)."""
    values, timing, per_problem = evaluate_policy(cfg, policy, problems)
    write_table(evaluation, "evaluation", per_problem)
    write_json(metrics, {"iteration": iteration, **values})
    points = [*earlier, {"iteration": iteration, "accuracy": values["accuracy"]}]
    write_json(curve, points)
    return values, timing, points


@dataclass(frozen=True)
class Graded:
    """Greedy and sampled completions of a list of problems, with their grades: the sampled
    ones `n_samples` per problem, problem after problem."""

    greedy: list[Completion]
    greedy_grades: list[Grade]
    sampled: list[Completion]
    sampled_grades: list[Grade]
    n_samples: int
    tokens_per_s: float

    def sampled_correct(self) -> list[list[bool]]:
        """Per problem, whether each of its samples is correct."""
        ok = [g.verdict == CORRECT for g in self.sampled_grades]
        n = self.n_samples
        return [ok[i:i + n] for i in range(0, len(ok), n)]


def evaluate_policy(cfg: PipelineConfig, policy: Path, problems: list[dict]
                    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Greedy and sampled completions on `problems`, graded by the verifier pool:
    (metrics, timing, one "evaluation" record per problem): `draw_and_grade`, then
    `policy_metrics`."""
    graded = draw_and_grade(cfg, policy, problems)
    metrics = policy_metrics(cfg, problems, graded)
    n = graded.n_samples
    rows = [{"id": p["id"], "difficulty": p["difficulty"], "greedy_correct": g.verdict == CORRECT,
             "sampled_correct": sum(ok), "n_samples": n}
            for p, g, ok in zip(problems, graded.greedy_grades, graded.sampled_correct(),
                                strict=True)]
    return metrics, {"evaluate/tokens_per_s": round(graded.tokens_per_s, 1)}, rows


def draw_and_grade(cfg: PipelineConfig, policy: Path, problems: list[dict]) -> Graded:
    """One greedy completion and `evaluate.n_samples` sampled ones per problem (the
    `evaluate` settings; seeds cfg.seed and cfg.seed + 1), graded by the verifier pool."""
    from cotflow.verify.pool import VerifierPool
    from models.prompts import policy_prompts
    from models.sampler import make_sampler

    e, v = cfg.evaluate, cfg.verify
    fmt = policy_prompts(cfg.data, policy)
    prompts = fmt.for_sampler([fmt.text(p["question"]) for p in problems])
    with make_sampler(cfg.sample.backend, policy, batch_size=e.batch_size, threads=cfg.threads,
                      serving=cfg.serving, seed=cfg.seed) as sampler:
        greedy = sampler.generate(prompts, max_new_tokens=e.max_new_tokens, temperature=1.0,
                                  top_p=1.0, seed=cfg.seed, greedy=True)
        sampled = sampler.generate([q for q in prompts for _ in range(e.n_samples)],
                                   max_new_tokens=e.max_new_tokens, temperature=e.temperature,
                                   top_p=1.0, seed=cfg.seed + 1)
    golds = [p["answer"] for p in problems]
    with VerifierPool(workers=v.workers, timeout_s=v.timeout_s, memory_mb=v.memory_mb) as pool:
        greedy_grades = pool.grade_many(
            [(gold, c.text) for gold, c in zip(golds, greedy, strict=True)], v.format)
        repeated = [gold for gold in golds for _ in range(e.n_samples)]
        sampled_grades = pool.grade_many(
            [(gold, c.text) for gold, c in zip(repeated, sampled, strict=True)], v.format)
    return Graded(greedy, greedy_grades, sampled, sampled_grades, e.n_samples,
                  sampler.tokens_per_s)


def policy_metrics(cfg: PipelineConfig, problems: list[dict], graded: Graded
                   ) -> dict[str, Any]:
    """Greedy accuracy, overall and per difficulty level, the greedy completions' finished
    share and length (per level too; in TON's format the skip ratio, overall and per level,
    and the share in format), and pass@k for each of `evaluate.pass_k`.

    Accuracy judges the final answer alone: `verify.check_steps` does not apply here. On
    the built-in task, `inconsistency_rate` is VerIPO's (specs/algorithms-b.md §4.8): the
    share of greedy-correct completions whose answer does not follow from their steps."""
    greedy, grades = graded.greedy, graded.greedy_grades
    greedy_ok = [g.verdict == CORRECT for g in grades]
    levels = [p["difficulty"] for p in problems]
    metrics: dict[str, Any] = {
        "accuracy": round(sum(greedy_ok) / len(problems), 6),
        "finished_fraction": round(sum(c.finished for c in greedy) / len(greedy), 6),
        **per_level(levels, [float(ok) for ok in greedy_ok], "accuracy"),
        **completion_stats(levels, [c.text for c in greedy], [c.num_tokens for c in greedy],
                           think=cfg.verify.format == "think"),
    }
    if cfg.data.source == "builtin":
        metrics["inconsistency_rate"] = _inconsistency(problems, greedy, grades, greedy_ok)
    n, sampled_ok = graded.n_samples, graded.sampled_correct()
    for k in cfg.evaluate.pass_k:  # k <= n_samples: checked when params.yaml is loaded
        scores = [pass_at_k(n, sum(ok), k) for ok in sampled_ok]
        metrics[f"pass@{k}"] = round(sum(scores) / len(scores), 6)
    return metrics


def _inconsistency(problems: list[dict], completions: list, grades: list,
                   correct: list[bool]) -> float:
    from cotflow.data.arithmetic import answer_follows

    flags = [not answer_follows(c.text, p["solution"], g.extracted)
             for p, c, g, ok in zip(problems, completions, grades, correct, strict=True) if ok]
    return round(sum(flags) / len(flags), 6) if flags else 0.0

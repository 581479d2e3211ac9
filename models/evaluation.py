"""Evaluating a policy on held-out problems: greedy accuracy, pass@k, completion length.

Shared by the baseline stage (the warm start's metrics) and the evaluate stage (each
iteration's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cotflow.algorithms.metrics import pass_at_k
from cotflow.algorithms.ton import completion_stats, per_level
from cotflow.config import PipelineConfig
from cotflow.records import write_json, write_table
from cotflow.verify.grade import CORRECT


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


def evaluate_policy(cfg: PipelineConfig, policy: Path, problems: list[dict]
                    ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Greedy and sampled completions on `problems`, graded by the verifier pool:
    (metrics, timing, one "evaluation" record per problem). Accuracy and the greedy
    completions' length are also given per difficulty level, and in TON's format the skip
    ratio (overall and per level) and the share in format.

    Accuracy judges the final answer alone: `verify.check_steps` does not apply here. On
    the built-in task, `inconsistency_rate` is VerIPO's (specs/algorithms-b.md §4.8): the
    share of greedy-correct completions whose answer does not follow from their steps."""
    from cotflow.verify.pool import VerifierPool
    from models.drawing import format_prompt
    from models.sampler import make_sampler

    e, v = cfg.evaluate, cfg.verify
    prompts = [format_prompt(cfg, p["question"]) for p in problems]
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
        greedy_ok = [g.verdict == CORRECT for g in greedy_grades]
        repeated = [gold for gold in golds for _ in range(e.n_samples)]
        sampled_ok = [g.verdict == CORRECT for g in pool.grade_many(
            [(gold, c.text) for gold, c in zip(repeated, sampled, strict=True)], v.format)]
    levels = [p["difficulty"] for p in problems]
    metrics: dict[str, Any] = {
        "accuracy": round(sum(greedy_ok) / len(problems), 6),
        "finished_fraction": round(sum(c.finished for c in greedy) / len(greedy), 6),
        **per_level(levels, [float(ok) for ok in greedy_ok], "accuracy"),
        **completion_stats(levels, [c.text for c in greedy], [c.num_tokens for c in greedy],
                           think=v.format == "think"),
    }
    if cfg.data.source == "builtin":
        metrics["inconsistency_rate"] = _inconsistency(problems, greedy, greedy_grades, greedy_ok)
    n = e.n_samples
    for k in e.pass_k:  # k <= n_samples: checked when params.yaml is loaded
        scores = [pass_at_k(n, sum(sampled_ok[i * n:(i + 1) * n]), k)
                  for i in range(len(problems))]
        metrics[f"pass@{k}"] = round(sum(scores) / len(scores), 6)
    rows = [{"id": p["id"], "difficulty": p["difficulty"], "greedy_correct": ok,
             "sampled_correct": sum(sampled_ok[i * n:(i + 1) * n]), "n_samples": n}
            for i, (p, ok) in enumerate(zip(problems, greedy_ok, strict=True))]
    return metrics, {"evaluate/tokens_per_s": round(sampler.tokens_per_s, 1)}, rows


def _inconsistency(problems: list[dict], completions: list, grades: list,
                   correct: list[bool]) -> float:
    from cotflow.data.arithmetic import answer_follows

    flags = [not answer_follows(c.text, p["solution"], g.extracted)
             for p, c, g, ok in zip(problems, completions, grades, correct, strict=True) if ok]
    return round(sum(flags) / len(flags), 6) if flags else 0.0

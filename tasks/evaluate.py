"""evaluate: held-out greedy accuracy, pass@k, completion length, accuracy per difficulty.

Outputs: metrics.json (a DVC metric), curve.json (a DVC plot: accuracy per iteration),
accuracy.png (the same curve, drawn here so it needs no network). `run_stage` then logs
the iteration to MLflow.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from cotflow.algorithms.metrics import pass_at_k
from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_json, read_table, rows_of, write_json
from cotflow.verify.grade import CORRECT

log = logging.getLogger(__name__)


def evaluate_policy(cfg: PipelineConfig, policy: Path,
                    problems: list[dict]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Greedy and sampled completions on `problems`, graded by the verifier pool."""
    from cotflow.verify.pool import VerifierPool
    from models.sampler import make_sampler
    from tasks.common import format_prompt

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
        greedy_ok = [g.verdict == CORRECT for g in pool.grade_many(
            [(gold, c.text) for gold, c in zip(golds, greedy, strict=True)])]
        repeated = [gold for gold in golds for _ in range(e.n_samples)]
        sampled_ok = [g.verdict == CORRECT for g in pool.grade_many(
            [(gold, c.text) for gold, c in zip(repeated, sampled, strict=True)])]
    metrics: dict[str, Any] = {
        "accuracy": round(sum(greedy_ok) / len(problems), 6),
        "mean_completion_tokens": round(sum(c.num_tokens for c in greedy) / len(greedy), 4),
        "finished_fraction": round(sum(c.finished for c in greedy) / len(greedy), 6),
    }
    by_diff: dict[int, list[bool]] = defaultdict(list)
    for p, ok in zip(problems, greedy_ok, strict=True):
        by_diff[p["difficulty"]].append(ok)
    for d, oks in sorted(by_diff.items()):
        metrics[f"accuracy_difficulty_{d}"] = round(sum(oks) / len(oks), 6)
    n = e.n_samples
    for k in e.pass_k:  # k <= n_samples: checked when params.yaml is loaded
        scores = [pass_at_k(n, sum(sampled_ok[i * n:(i + 1) * n]), k)
                  for i in range(len(problems))]
        metrics[f"pass@{k}"] = round(sum(scores) / len(scores), 6)
    return metrics, {"evaluate/tokens_per_s": round(sampler.tokens_per_s, 1)}


def draw_curve(points: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cotflow.records import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot([p["iteration"] for p in points], [100 * p["accuracy"] for p in points], "o-")
    ax.set_xlabel("iteration (0 = warm start)")
    ax.set_ylabel("held-out greedy accuracy (%)")
    ax.set_xticks([p["iteration"] for p in points])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    test = rows_of(read_table(layout.test_set, "problems"))
    metrics, timing = evaluate_policy(cfg, it.policy, test)
    write_json(it.metrics, {"iteration": int(it.key), **metrics})
    # The previous folder's curve plus this point: the curve depends on nothing undeclared.
    points = [*read_json(it.prev_curve), {"iteration": int(it.key),
                                                      "accuracy": metrics["accuracy"]}]
    write_json(it.curve, points)
    draw_curve(points, it.plot)
    return {"accuracy": metrics["accuracy"]}, timing

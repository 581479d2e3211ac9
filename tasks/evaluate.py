"""evaluate: held-out greedy accuracy, pass@k, completion length, accuracy per difficulty.

Outputs: metrics.json (a DVC metric), evaluation.parquet (per problem, for paired
comparisons of runs), curve.json (a DVC plot: accuracy per iteration),
accuracy.png (the same curve, drawn here so it needs no network). `run_stage` then logs
the iteration to MLflow.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_json, read_table, rows_of

log = logging.getLogger(__name__)


def draw_curve(points: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cotflow.plots import save_figure

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot([p["iteration"] for p in points], [100 * p["accuracy"] for p in points], "o-")
    ax.set_xlabel("iteration (0 = warm start)")
    ax.set_ylabel("held-out greedy accuracy (%)")
    ax.set_xticks([p["iteration"] for p in points])
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.evaluation import record_evaluation

    test = rows_of(read_table(layout.test_set, "problems"))
    metrics, timing, points = record_evaluation(
        cfg, it.policy, test, int(it.key), evaluation=it.evaluation, metrics=it.metrics,
        curve=it.curve, earlier=read_json(it.prev_curve))
    draw_curve(points, it.plot)
    return {"accuracy": metrics["accuracy"]}, timing

"""baseline: the warm start's held-out evaluation, iteration 0 of every curve.

Inputs: artifacts/base/test.parquet and policy/. Outputs: artifacts/base/metrics.json (a DVC
metric), evaluation.parquet (per problem) and curve.json (its one point, which the first
iteration's evaluate extends). `run_stage` then logs the warm start to MLflow.
"""

from __future__ import annotations

from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import Layout
from cotflow.records import read_table, rows_of


def run(cfg: PipelineConfig, layout: Layout) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.evaluation import record_evaluation

    test = rows_of(read_table(layout.test_set, "problems"))
    metrics, timing, _ = record_evaluation(
        cfg, layout.base_policy, test, 0, evaluation=layout.base_evaluation,
        metrics=layout.base_metrics, curve=layout.base_curve, earlier=[])
    return {"accuracy": metrics["accuracy"]}, timing

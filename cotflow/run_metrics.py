"""The MLflow metric names of what a run's stages wrote, chosen so that results come first.

MLflow sorts metric names by code point: its compare view plots the first one (the scatter
plot's y axis is the first metric) and its run page lists them in that order; its charts
group them by the prefix before the first "/". So every name starts with a prefix that
sorts after `eval/`:

- `eval/accuracy`, `eval/mean_completion_tokens`, `eval/pass_at_K`: the held-out headline
  (metrics.json), first of all; `cotflow eval` adds `eval/avg_at_K` and `eval/maj_at_K`;
- `evaluate/NAME`: the rest of metrics.json (per level, finished fraction, skip ratio...);
- `stats/STAGE/NAME`: stage STAGE's statistics (stats/STAGE.json), results;
- `timing/STAGE/NAME`: seconds, import seconds, peak RSS, tokens/s (timing/STAGE.json):
  machine-dependent, kept apart from results.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cotflow.layout import BASE_STAGES, STAGES, IterationLayout, Layout, stats_file, timing_file
from cotflow.records import read_json

HEADLINE = re.compile(r"accuracy|mean_completion_tokens|(pass|avg|maj)@\d+")
# metrics.json's `iteration` is the metric's step already.
NOT_METRICS = frozenset({"iteration"})
# What the parent charts across iterations (step = iteration).
PARENT_PREFIXES = ("eval/", "evaluate/", "stats/verify/")
# The stages that write metrics.json: their stats hold its accuracy only (eval/accuracy).
EVALUATING = frozenset({"baseline", "evaluate"})


def numeric(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """`prefix/name` for each number of `values` (MLflow names have no "@")."""
    return {f"{prefix}/{k}".replace("@", "_at_"): float(v) for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def evaluation(values: dict[str, Any]) -> dict[str, float]:
    """metrics.json's numbers: the headline as `eval/NAME`, the rest as `evaluate/NAME`."""
    rest = {k: v for k, v in values.items() if k not in NOT_METRICS}
    return (numeric("eval", {k: v for k, v in rest.items() if HEADLINE.fullmatch(k)})
            | numeric("evaluate", {k: v for k, v in rest.items() if not HEADLINE.fullmatch(k)}))


def stage_figures(folder: Path, stages: Iterable[str]) -> dict[str, float]:
    """The numbers of the `stages`' stats and timing files in `folder`, as
    `stats/STAGE/NAME` and `timing/STAGE/NAME`."""
    metrics: dict[str, float] = {}
    for stage in stages:
        files = [("timing", timing_file(folder, stage))] + (
            [] if stage in EVALUATING else [("stats", stats_file(folder, stage))])
        for kind, path in files:
            if path.is_file():
                # Timing keys may carry their stage already (`sample/tokens_per_s`).
                values = {k.split("/")[-1]: v for k, v in read_json(path).items()}
                metrics |= numeric(f"{kind}/{stage}", values)
    return metrics


def collect_iteration(it: IterationLayout) -> dict[str, float]:
    """Every number the iteration's stages wrote, under the names above."""
    return stage_figures(it.dir, STAGES) | evaluation(read_json(it.metrics))


def collect_base(layout: Layout) -> dict[str, float]:
    """Every number the base stages wrote (the splits, the warm start, its evaluation)."""
    return stage_figures(layout.base, BASE_STAGES) | evaluation(read_json(layout.base_metrics))


def for_parent(metrics: dict[str, float]) -> dict[str, float]:
    """The iteration's metrics the parent run charts across iterations."""
    return {k: v for k, v in metrics.items() if k.startswith(PARENT_PREFIXES)}

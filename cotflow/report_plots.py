"""`cotflow report`, its figures: the report's numbers over iterations as PNGs (Agg, no
network), one per section of the page. A line joins the iterations that have its number:
those not run have none, nor do other methods' iterations have a method's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cotflow.plots import draw_skip_ratio, save_figure, skip_levels
from cotflow.report import Iteration, levels, method_rows, pass_keys, series


@dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    lines: dict[str, list[float | None]]  # legend label -> value per iteration
    ylim: tuple[float, float] | None = None  # None: matplotlib's choice
    from_zero: bool = False  # small rates: from 0 up to what they reach


UNIT = (-0.02, 1.02)  # accuracies: the whole scale, so iterations compare at a glance


def draw_panels(its: list[Iteration], panels: list[Panel], path: Path) -> Path:
    """Side by side, one line per entry of each panel, x = the iterations (0 = warm start)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.4, 4.6 * len(panels)), 3.4),
                             dpi=100, squeeze=False)
    x = [it.step for it in its]
    # The warm start's name is too wide for a tick.
    ticks = [f"{it.step}\n{it.algorithm if it.step else 'base'}" for it in its]
    for ax, panel in zip(axes[0], panels, strict=True):
        for label, values in panel.lines.items():
            points = [(s, v) for s, v in zip(x, values, strict=True) if v is not None]
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="o",
                        markersize=4, label=label)
        ax.set_xticks(x, ticks, fontsize=7)
        ax.set_xlim(-0.5, x[-1] + 0.5)  # every iteration, also those without a number
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel)
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        elif panel.from_zero:
            top = ax.get_ylim()[1]
            ax.set_ylim(-0.03 * top, top)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def draw_all(its: list[Iteration], folder: Path) -> dict[str, Path]:
    """Every figure the iterations have numbers for, in `folder`: section name -> PNG."""
    out: dict[str, Path] = {}
    heldout = {"accuracy (greedy)": series(its, "metrics", "accuracy")} | {
        k: series(its, "metrics", k) for k in pass_keys(its)}
    length = {"mean completion tokens": series(its, "metrics", "mean_completion_tokens")}
    out["heldout"] = draw_panels(its, [
        Panel("held-out accuracy and pass@k", "fraction of problems", heldout, UNIT),
        Panel("mean completion length (greedy)", "tokens", length)], folder / "heldout.png")
    if len(lv := levels(its, "accuracy")) > 1:  # one level: the held-out figure says it all
        by_level = {f"level {d}": series(its, "metrics", f"accuracy_difficulty_{d}")
                    for d in lv}
        tokens = {f"level {d}": series(its, "metrics", f"mean_completion_tokens_difficulty_{d}")
                  for d in levels(its, "mean_completion_tokens")}
        panels = [Panel("held-out accuracy per difficulty level", "accuracy", by_level, UNIT)]
        if tokens:
            panels.append(Panel("completion length per level", "tokens", tokens))
        out["levels"] = draw_panels(its, panels, folder / "levels.png")
    if rows := method_rows(its):
        out["methods"] = draw_panels(
            its, [Panel("methods' own rates", "rate", dict(rows), from_zero=True)],
            folder / "methods.png")
    ran = [it for it in its if it.metrics is not None]
    if ran and (skip := skip_levels(ran[-1].metrics or {})):
        # TON's figure as MLflow shows it (cotflow/plots.py); not-run iterations are NaN.
        curves = {d: [(v if v is not None else math.nan, 0.0)
                      for v in series(its, "metrics", f"skip_ratio_difficulty_{d}")]
                  for d in skip}
        out["skip"] = draw_skip_ratio({"TON skip ratio per level (held-out)": curves},
                                      folder / "skip_ratio.png")
    # A line per algorithm: their losses differ in kind (a DPO loss is no GRPO loss).
    algorithms = list(dict.fromkeys(it.algorithm for it in its[1:]))
    train = [Panel(f"train {k}", k, {a: [v if it.algorithm == a else None
                                         for it, v in zip(its, series(its, "train", k),
                                                          strict=True)] for a in algorithms})
             for k in ("loss", "grad_norm", "kl")
             if any(v is not None for v in series(its, "train", k))]
    if train:
        out["train"] = draw_panels(its, train, folder / "train.png")
    return out

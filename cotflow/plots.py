"""Figures drawn here (no network, Agg backend): how they are saved, and TON's skip ratio per
level over iterations, for MLflow (one run) and the claims report (mean ± se over seeds)."""

from __future__ import annotations

from pathlib import Path

# panel title -> level -> (mean, se) per iteration (0 = the warm start)
SkipCurves = dict[str, dict[int, list[tuple[float, float]]]]


def draw_skip_ratio(panels: SkipCurves, path: Path) -> Path:
    """One panel per entry of `panels`, a line per level; written atomically to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), dpi=100,
                             squeeze=False)
    for ax, (title, levels) in zip(axes[0], panels.items(), strict=True):
        for level, points in sorted(levels.items()):
            ax.errorbar(range(len(points)), [m for m, _ in points], yerr=[e for _, e in points],
                        marker="o", capsize=2, label=f"level {level}")
        ax.set_xticks(range(max((len(p) for p in levels.values()), default=0)))
        ax.set_title(title)
        ax.set_xlabel("iteration (0 = warm start)")
        ax.set_ylabel("skip ratio (empty thought)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def save_figure(fig, path: Path) -> Path:
    """Lay out `fig`, write it to `path` as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    from cotflow.records import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def skip_levels(metrics: dict[str, float]) -> list[int]:
    """The levels a metrics.json reports a skip ratio for."""
    prefix = "skip_ratio_difficulty_"
    return sorted(int(k[len(prefix):]) for k in metrics if k.startswith(prefix))

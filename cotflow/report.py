"""`cotflow report`, its data: what each iteration of a workspace left (held-out metrics,
stage statistics) and what params.yaml says it runs, as plain values; report_plots.py draws
them, report_html.py lays them out and writes the page."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import STAGES, Layout
from cotflow.records import read_json

# Stages whose stats the page tabulates: evaluate's repeats metrics.json's accuracy.
STAT_STAGES = tuple(s for s in STAGES if s != "evaluate")
MISSING = None  # a value an iteration does not have (shown as a dash)


class ReportError(ValueError):
    """The workspace has nothing to report."""


@dataclass(frozen=True)
class Iteration:
    """One column of the report: the warm start (step 0, folder base) or an iteration."""

    folder: str
    step: int
    algorithm: str  # params.yaml's name of its algorithm; "warm start" for base
    kind: str
    overrides: dict[str, Any]
    metrics: dict[str, Any] | None  # metrics.json; None: not evaluated (yet)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> its stats

    @property
    def label(self) -> str:
        return f"{self.step} {self.algorithm}"

    @property
    def status(self) -> str:
        """"done", "not run", or the stages done so far (a pipeline stopped or running)."""
        if self.metrics is not None:
            return "done"
        done = [s for s in STAGES if s in self.stats]
        return f"stages done: {', '.join(done)}" if done else "not run"


def gather(cfg: PipelineConfig, root: Path) -> list[Iteration]:
    """The warm start and every iteration `cfg` (the workspace's params.yaml) lists, in
    order, with what their folders hold. Iterations not run yet are kept (metrics None):
    only a workspace with no held-out metrics at all is an error."""
    layout = Layout(Path(root))
    if not layout.artifacts.is_dir():
        raise ReportError(f"{layout.artifacts}: no such folder; run the pipeline first "
                          "(`cotflow run` or `dvc repro`)")
    out = [_read("base", 0, "warm start", "sft", {}, layout.base)]
    for step, key in enumerate(cfg.iteration_keys(), start=1):
        entry = cfg.iterations[key]
        out.append(_read(f"iter-{key}", step, entry.algorithm, cfg.algorithm(key).kind,
                         entry.overrides, layout.folder(f"iter-{key}")))
    if all(it.metrics is None for it in out):
        raise ReportError(f"nothing evaluated yet: {layout.base_metrics} and the iterations' "
                          f"metrics.json ({', '.join(it.folder for it in out[1:])}) are "
                          "missing; run the pipeline first (`cotflow run` or `dvc repro`)")
    return out


def _read(folder: str, step: int, algorithm: str, kind: str, overrides: dict[str, Any],
          path: Path) -> Iteration:
    metrics = read_json(path / "metrics.json") if (path / "metrics.json").is_file() else None
    stats = {p.stem: read_json(p) for p in sorted((path / "stats").glob("*.json"))}
    return Iteration(folder, step, algorithm, kind, overrides, metrics, stats)


def value(it: Iteration, source: str, key: str) -> Any:
    """`key` of the iteration's metrics.json (`source` "metrics") or of stage `source`'s
    stats; MISSING where it has none."""
    values = it.metrics if source == "metrics" else it.stats.get(source)
    return (values or {}).get(key, MISSING)


def number(v: Any) -> float | None:
    """`v` as a float for a plot; None for what is no number (bools are flags, not numbers)."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def series(its: list[Iteration], source: str, key: str) -> list[float | None]:
    return [number(value(it, source, key)) for it in its]


def pass_keys(its: list[Iteration]) -> list[str]:
    """The pass@k keys any metrics.json has, by k."""
    found = {k for it in its for k in (it.metrics or {}) if re.fullmatch(r"pass@\d+", k)}
    return sorted(found, key=lambda k: int(k.removeprefix("pass@")))


def levels(its: list[Iteration], prefix: str) -> list[int]:
    """The difficulty levels of metrics.json's `<prefix>_difficulty_N` keys."""
    pattern = re.compile(re.escape(prefix) + r"_difficulty_(\d+)")
    return sorted({int(m.group(1)) for it in its for k in (it.metrics or {})
                   if (m := pattern.fullmatch(k))})


@dataclass(frozen=True)
class MethodMetric:
    """A number one method reports about itself, where it is found, and for which
    iterations it means something."""

    label: str
    source: str  # "metrics" or the stage whose stats hold it
    key: str
    applies: Callable[[Iteration], bool] = lambda it: True


METHOD_METRICS = (
    # Uniform and reused allocations write a zero share by construction: GVM's only.
    MethodMetric("GVM zero-variance share (prompts allotted no samples)", "allocate",
                 "zero_share", lambda it: value(it, "allocate", "method") == "gvm"),
    MethodMetric("Critique-GRPO refinement success (wrong answers refined to right)",
                 "critique", "refinement_success_rate"),
    MethodMetric("Critique-GRPO all-wrong groups rescued", "critique", "rescued_share"),
    MethodMetric("TON skip ratio (held-out, empty thoughts)", "metrics", "skip_ratio"),
    MethodMetric("TON skip ratio (training rollouts)", "train", "skip_ratio"),
    MethodMetric("VerIPO inconsistency rate (judged rollouts)", "judge", "inconsistency_rate"),
    MethodMetric("VerIPO inconsistency rate (held-out)", "metrics", "inconsistency_rate"),
)


def method_rows(its: list[Iteration]) -> list[tuple[str, list[float | None]]]:
    """(label, value per iteration) of each method metric some iteration reports."""
    rows = []
    for m in METHOD_METRICS:
        values = [number(value(it, m.source, m.key)) if m.applies(it) else None for it in its]
        if any(v is not None for v in values):
            rows.append((m.label, values))
    return rows


def stage_rows(its: list[Iteration], stage: str) -> list[tuple[str, list[Any]]]:
    """(key, value per iteration) of stage `stage`'s stats, keys in first-seen order; none
    when no iteration's stats say anything but zeros (a stage its algorithms skip)."""
    keys = list(dict.fromkeys(k for it in its for k in it.stats.get(stage, {})))
    rows = [(k, [value(it, stage, k) for it in its]) for k in keys]
    said = any(v not in (MISSING, 0, 0.0, False, "") for _, vals in rows for v in vals)
    return rows if said else []

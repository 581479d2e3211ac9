"""What the benchmarks share: run a pipeline's stages in this process, and read curves.

A run executes the same stage functions that `dvc repro` runs, one workspace per arm and
seed (MLflow off), and returns (cumulative samples, held-out greedy accuracy) per iteration.
Samples count every completion drawn: the sample stage's (DAPO refills included) and GVM's
probe (reused probe samples cost nothing).
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

import yaml

STAGES = ("allocate", "sample", "verify", "critique", "judge", "train", "evaluate")


def run_arm(root: Path, params: dict[str, Any], base_from: Path | None,
            timings: dict[str, float] | None = None) -> list[tuple[int, float]]:
    """(cumulative samples, held-out accuracy) at the warm start and after each iteration.
    `base_from`: a warm start to copy instead of running prepare. `timings` accumulates
    seconds per stage."""
    import time

    from cotflow.records import read_json
    from tasks.common import run_stage

    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if base_from is None:
        run_stage("prepare", None, root, root / "params.yaml")
    else:
        shutil.copytree(base_from, root / "artifacts" / "base")
    curve = [(0, read_json(root / "artifacts/base/metrics.json")["accuracy"])]
    spent = 0
    for key in params["iterations"]:
        for stage in STAGES:
            t0 = time.perf_counter()
            stats = run_stage(stage, key, root, root / "params.yaml")
            if timings is not None:
                timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t0
            if stage == "allocate":
                spent += stats.get("probe_samples", 0)
            elif stage == "sample":
                spent += stats["completions"]
        curve.append((spent, read_json(root / f"artifacts/iter-{key}/metrics.json")["accuracy"]))
    return curve


def samples_to_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    """Samples at the first point where accuracy >= target, interpolated linearly."""
    for (s0, a0), (s1, a1) in zip(curve, curve[1:], strict=False):
        if a0 >= target:
            return s0
        if a1 >= target:
            return s0 + (s1 - s0) * (target - a0) / (a1 - a0)
    return curve[0][0] if curve and curve[0][1] >= target else None


def mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[float, float]]:
    return [(statistics.mean(c[i][0] for c in curves), statistics.mean(c[i][1] for c in curves))
            for i in range(len(curves[0]))]

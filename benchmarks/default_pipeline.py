"""Run the default pipeline from a clean workspace and print what it cost and what it learned.

    python benchmarks/default_pipeline.py [--workspace DIR] [--keep]

Copies the project (as `git ls-files` sees it) into a fresh git workspace, runs `cotflow run`
(Prefect flow -> one `dvc repro --single-item` per stage -> MLflow), then a no-op `dvc repro`.
Prints: wall time of each stage, the share of wall time spent outside the stage functions
(process starts and imports, Prefect, DVC, MLflow), held-out accuracy of the warm start and
each iteration, the peak memory of any one process, and the no-op `dvc repro` time.
Targets (issue #2, 2 CPU cores): total <= 15 min, final accuracy >= warm start + 15 points,
overhead <= 10 %, no-op repro <= 3 s, peak memory <= 4 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cotflow.workspace import make_workspace


def stage_rows(ws: Path) -> list[tuple[str, dict]]:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    rows = [("prepare", json.loads((ws / "artifacts/base/timing/prepare.json").read_text()))]
    for key in params["iterations"]:
        for stage in ("allocate", "sample", "verify", "critique", "judge", "train", "evaluate"):
            path = ws / f"artifacts/iter-{key}/timing/{stage}.json"
            rows.append((f"{stage}@{key}", json.loads(path.read_text())))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the workspace afterwards")
    args = ap.parse_args()
    ws = args.workspace or Path(tempfile.mkdtemp(prefix="cotflow-bench-"))
    ws.mkdir(parents=True, exist_ok=True)
    make_workspace(ws)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI", "COTFLOW_"))}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cotflow", "run"], cwd=ws, env=env, check=True)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=ws, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    noop = time.perf_counter() - t1
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    rows = stage_rows(ws)
    print(f"\n{'stage':<14}{'function s':>11}{'imports s':>11}{'tracking s':>11}")
    inside = 0.0
    for name, t in rows:
        work = t["seconds"] - t.get("tracking_seconds", 0.0)
        inside += work
        print(f"{name:<14}{work:>11.1f}{t.get('import_seconds', 0.0):>11.1f}"
              f"{t.get('tracking_seconds', 0.0):>11.1f}")
    base = json.loads((ws / "artifacts/base/metrics.json").read_text())["accuracy"]
    params = yaml.safe_load((ws / "params.yaml").read_text())
    accs = [json.loads((ws / f"artifacts/iter-{k}/metrics.json").read_text())["accuracy"]
            for k in params["iterations"]]
    outside = wall - inside
    print(f"\nheld-out greedy accuracy: warm start {100 * base:.1f} %, iterations "
          + ", ".join(f"{100 * a:.1f} %" for a in accs))
    checks = [
        ("total wall time", f"{wall / 60:.1f} min", wall <= 15 * 60),
        ("accuracy gain", f"{100 * (accs[-1] - base):+.1f} points", accs[-1] - base >= 0.15),
        ("outside stage functions", f"{outside:.1f} s = {100 * outside / wall:.1f} %",
         outside <= 0.10 * wall),
        ("no-op dvc repro", f"{noop:.2f} s", noop <= 3.0),
        ("peak memory (one process)", f"{peak_mb / 1024:.2f} GiB", peak_mb <= 4096),
    ]
    for label, value, ok in checks:
        print(f"{label:<28}{value:>24}   {'met' if ok else 'NOT met'}")
    if not args.keep and args.workspace is None:
        shutil.rmtree(ws, ignore_errors=True)
    else:
        print(f"workspace kept: {ws}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run the default pipeline from a clean workspace and print what it cost and what it learned.

    python benchmarks/default_pipeline.py [--workspace DIR] [--keep]
        [--params FILE] [--iterations N]

Copies the project (as `git ls-files` sees it) into a fresh git workspace, runs `cotflow run`
(Prefect flow -> one `dvc repro --single-item` per stage -> MLflow), then a no-op `dvc repro`.
Prints: wall time of each stage, the share of wall time spent outside the stage functions
(process starts and imports, Prefect, DVC, MLflow), held-out accuracy of the warm start and
each iteration, the peak memory of any one process, and the no-op `dvc repro` time.
Targets (issue #2, 2 CPU cores): total <= 15 min, final accuracy >= warm start + 15 points,
overhead <= 10 %, no-op repro <= 3 s, peak memory <= 4 GiB.

`--params FILE` runs another params file instead (e.g. tests/data/params.micro.yaml) and
`--iterations N` makes its iterations N of the `raft` preset, the default pipeline's shape:
the micro sizes with 5 iterations keep every per-stage cost of the default pipeline (same
stages, same dvc.lock) at a fraction of its run time, so overhead in seconds is measured there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from cotflow.layout import BASE_STAGES
from cotflow.workspace import make_workspace

# Prefect's console lines: "21:19:28.088 | INFO    | Task run 'data' - Finished in state ..."
_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+ +\| (.*)$")


def stage_rows(ws: Path) -> list[tuple[str, dict]]:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    rows = [(name, json.loads((ws / f"artifacts/base/timing/{name}.json").read_text()))
            for name in BASE_STAGES]
    for key in params["iterations"]:
        for stage in ("allocate", "sample", "verify", "critique", "judge", "train", "evaluate"):
            path = ws / f"artifacts/iter-{key}/timing/{stage}.json"
            rows.append((f"{stage}@{key}", json.loads(path.read_text())))
    return rows


def flow_marks(log: str) -> tuple[float | None, dict[str, float]]:
    """(when the flow run began, when each stage's tasks finished), in seconds of the day,
    from Prefect's log lines; a stage's wall time is the gap since the mark before it."""
    began, finished = None, {}
    for line in log.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        sec = _seconds_of_day(datetime.strptime(m.group(1), "%H:%M:%S.%f"))
        text = m.group(2)
        if text.startswith("Flow run ") and " - Beginning flow run" in text:
            began = sec
        elif (f := re.match(r"Task run '([^']+)' - Finished in state", text)):
            # The flow's MLflow logging of a stage ("log evaluate@001") counts to the stage.
            finished[f.group(1).removeprefix("log ")] = sec
    return began, finished


def _seconds_of_day(t: datetime) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the workspace afterwards")
    ap.add_argument("--params", type=Path, default=None,
                    help="params file to run instead of the project's params.yaml")
    ap.add_argument("--iterations", type=int, default=None,
                    help="make the iterations this many of the raft preset")
    args = ap.parse_args()
    ws = args.workspace or Path(tempfile.mkdtemp(prefix="cotflow-bench-"))
    ws.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load(args.params.read_text()) if args.params else None
    make_workspace(ws, params)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI", "COTFLOW_"))}
    if args.iterations is not None:
        subprocess.run([sys.executable, "-m", "cotflow", "preset", "raft", "-n",
                        str(args.iterations)], cwd=ws, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["git", "commit", "-qam", "iterations"], cwd=ws, check=True)
    start = _seconds_of_day(datetime.now())  # Prefect logs local wall-clock times
    t0 = time.perf_counter()
    run = subprocess.Popen([sys.executable, "-m", "cotflow", "run"], cwd=ws, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    for line in run.stdout:  # shown as it comes, kept to read Prefect's marks from
        sys.stdout.write(line)
        out.append(line)
    if run.wait():
        raise SystemExit(f"cotflow run failed (exit {run.returncode})")
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=ws, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    noop = time.perf_counter() - t1
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    rows = stage_rows(ws)
    began, finished = flow_marks("".join(out))
    print(f"\n{'stage':<14}{'wall s':>8}{'function s':>11}{'outside s':>10}{'imports s':>10}"
          f"{'tracking s':>11}")
    inside = 0.0
    last = began
    for name, t in rows:
        # `seconds` is the stage function alone: imports and MLflow logging are timed apart,
        # outside it (tasks/common.py run_stage).
        work = t["seconds"]
        inside += work
        end = finished.get(name)
        stage_wall = end - last if end is not None and last is not None else None
        last = end
        cells = ("" if stage_wall is None else f"{stage_wall:>8.1f}", f"{work:>11.1f}",
                 "" if stage_wall is None else f"{stage_wall - work:>10.1f}")
        print(f"{name:<14}{cells[0]:>8}{cells[1]}{cells[2]:>10}"
              f"{t.get('import_seconds', 0.0):>10.1f}{t.get('tracking_seconds', 0.0):>11.1f}")
    if began is not None and finished:
        print(f"{'(start: Python, Prefect server)':<14}{began - start:>8.1f}\n"
              f"{'(end: flow, server stop)':<14}{start + wall - max(finished.values()):>8.1f}")
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

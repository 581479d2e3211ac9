"""Uniform sampling against GVM's per-prompt budgets: held-out accuracy against samples.

    python benchmarks/gvm_speedup.py [--seeds 0 1 2] [--iterations 3]
        [--arms raft++ gvm-raft grpo gvm-grpo] [--prompts 512] [--n 8] [--probe-n 8]
        [--jobs 2 --warm-start artifacts/base] [--set KEY=VALUE] [--pool K] ...
    python benchmarks/gvm_speedup.py --report --workspace DIR [--seeds ...] [--arms ...]

Arms are the presets users run (cotflow/presets.py): `raft++` against `gvm-raft` (RAFT++
with GVM budgets) and `grpo` against `gvm-grpo`; `gvm-raft-reuse` and `gvm-grpo-reuse` add
`allocate.gvm.probe: reuse`. Every arm draws the same N = n × prompts samples per iteration
(groups of 8 for GRPO, so prompts = N / 8), runs the same stage functions that `dvc repro`
runs (one workspace per arm and seed, MLflow off) and starts from the same warm start per
seed. Samples are counted cumulatively and include GVM's probe (reused probe samples cost
nothing).

Prints, per arm, mean ± sd over seeds of held-out accuracy at each iteration against mean
cumulative samples; then issue 4's speedup of each GVM arm over its uniform arm,

    speedup = samples uniform needs to reach its final accuracy
              / samples the GVM arm needs to reach that accuracy

(first crossing, linearly interpolated between iterations; per seed and on the mean curves;
a GVM arm that never reaches it gets "not reached" and the bound total uniform / total GVM),
and the same in iterations (the paper's steps, which leave the probe uncounted); last, per
task difficulty, what the probe measured (p_i, G_i) and where the budget went.

With `--pool K` every arm draws its prompts from the first K training prompts only (a copy of
the warm start with a K-row train.parquet), so prompts recur across iterations and the
`-reuse` arms have previous samples to reuse (with K = prompts, all of them after iteration 1).
`--report` runs nothing and prints the figures of the runs kept in `--workspace`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml
from harness import (
    add_arm_arguments,
    by_iteration,
    curve_of,
    mean_curve,
    preset_params,
    run_jobs,
    speedup_ratio,
)

REUSE = ("allocate.gvm.probe=reuse",)
# arm -> (preset, extra settings, the uniform arm it is compared with)
ARMS: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "raft++": ("raft++", (), None),
    "gvm-raft": ("gvm-raft", (), "raft++"),
    "gvm-raft-reuse": ("gvm-raft", REUSE, "raft++"),
    "grpo": ("grpo", (), None),
    "gvm-grpo": ("gvm-grpo", (), "grpo"),
    "gvm-grpo-reuse": ("gvm-grpo", REUSE, "grpo"),
}


def speedup(uniform: list[tuple[float, float]], other: list[tuple[float, float]]) -> str:
    ratio = speedup_ratio(uniform, other)
    if ratio is None:
        return f"not reached (< {uniform[-1][0] / other[-1][0]:.2f}x)"
    if ratio == float("inf"):
        return "reached at the warm start"
    return f"{ratio:.2f}x"


def budget_by_difficulty(runs: list[Path]) -> list[str]:
    """Per difficulty, over every GVM iteration of `runs`: prompts, mean p_i, the shares never
    and always solved in the probe, mean G_i, the share given no samples, the mean n_i (the
    uniform arm gives each prompt n) and the share of the budget."""
    import pyarrow.parquet as pq

    rows: dict[int, list[dict[str, float]]] = defaultdict(list)
    for run in runs:
        train = pq.read_table(run / "artifacts/base/train.parquet",
                              columns=["id", "difficulty"]).to_pylist()
        difficulty = {r["id"]: r["difficulty"] for r in train}
        for path in sorted(run.glob("artifacts/iter-*/budget.parquet")):
            for r in pq.read_table(path).to_pylist():
                rows[difficulty[r["prompt_id"]]].append(r)
    out = [f"{'difficulty':>10}{'prompts':>9}{'mean p':>8}{'p = 0':>7}{'p = 1':>7}{'mean G':>8}"
           f"{'n = 0':>7}{'mean n':>8}{'share of N':>11}"]
    total = sum(r["n"] for group in rows.values() for r in group) or 1
    for d in sorted(rows):
        group = rows[d]
        shares = [sum(test(r) for r in group) / len(group)
                  for test in (lambda r: r["p"] == 0, lambda r: r["p"] == 1, lambda r: r["n"] == 0)]
        out.append(f"{d:>10}{len(group):>9}{statistics.mean(r['p'] for r in group):>8.2f}"
                   f"{shares[0]:>7.0%}{shares[1]:>7.0%}"
                   f"{statistics.mean(r['G'] for r in group):>8.1f}{shares[2]:>7.0%}"
                   f"{statistics.mean(r['n'] for r in group):>8.2f}"
                   f"{sum(r['n'] for r in group) / total:>11.0%}")
    return out


def print_budgets(top: Path, seeds: list[int], arms: list[str]) -> None:
    """`budget_by_difficulty` of each GVM arm, over its seeds' runs in top/seed-S/ARM."""
    for arm in arms:
        print(f"\n{arm}: the probe and the budget by difficulty (all seeds and iterations)")
        print("\n".join(budget_by_difficulty([top / f"seed-{s}" / arm for s in seeds])))


def pooled_warm_start(warm_start: Path, pool: int, top: Path) -> Path:
    """A copy of `warm_start` whose train.parquet keeps its first `pool` prompts."""
    import pyarrow.parquet as pq

    out = top / f"warm-start-pool-{pool}"
    if not out.exists():
        tmp = top / f".warm-start-pool-{pool}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(warm_start, tmp)
        train = pq.read_table(warm_start / "train.parquet")
        if train.num_rows < pool:
            raise SystemExit(f"--pool {pool}: the warm start has {train.num_rows} prompts")
        pq.write_table(train.slice(0, pool), tmp / "train.parquet")
        tmp.rename(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arm_arguments(ap, prompts=512, n=8)
    ap.add_argument("--arms", nargs="+", default=["raft++", "gvm-raft", "grpo", "gvm-grpo"],
                    choices=list(ARMS))
    ap.add_argument("--probe-n", type=int, default=8, help="GVM's N'")
    ap.add_argument("--pool", type=int, default=None,
                    help="draw prompts from the first POOL training prompts (needs --warm-start)")
    ap.add_argument("--report", action="store_true",
                    help="run nothing: print the figures of the runs kept in --workspace")
    args = ap.parse_args()
    missing = {ARMS[a][2] for a in args.arms} - set(args.arms) - {None}
    if missing:
        ap.error(f"--arms needs the uniform arms its GVM arms are compared with: "
                 f"{', '.join(sorted(missing))}")
    if args.jobs > 1 and args.warm_start is None:
        ap.error("--jobs needs --warm-start (arms then share nothing)")
    if args.pool and args.warm_start is None and not args.report:
        ap.error("--pool needs --warm-start")
    if args.report and args.workspace is None:
        ap.error("--report needs --workspace")
    from cotflow.env import apply_defaults

    base = yaml.safe_load(args.base.read_text())
    top = args.workspace or Path(tempfile.mkdtemp(prefix="cotflow-gvm-"))
    top.mkdir(parents=True, exist_ok=True)
    apply_defaults(top)
    common: tuple[str, ...] = (f"allocate.gvm.probe_n={args.probe_n}",)
    pool = ""
    if args.pool:
        if not args.report:
            args.warm_start = pooled_warm_start(args.warm_start, args.pool, top)
        common += (f"data.n_train={args.pool}",)
        pool = f"; prompts from a pool of {args.pool}"
    t0 = time.perf_counter()
    if args.report:
        results = {(seed, arm): (curve_of(top / f"seed-{seed}" / arm), 0.0)
                   for seed in args.seeds for arm in args.arms}
    else:
        jobs = {(seed, arm): preset_params(base, args, ARMS[arm][0], seed, top, arm,
                                           common + ARMS[arm][1])
                for seed in args.seeds for arm in args.arms}
        results = run_jobs(top, jobs, args.jobs, args.warm_start)
    curves: dict[str, list[list[tuple[int, float]]]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    for (seed, arm), (curve, spent) in results.items():
        curves[arm].append(curve)
        seconds[arm] += spent
        print(f"seed {seed} {arm}: " + ", ".join(f"{s}:{100 * a:.1f}%" for s, a in curve))

    print(f"\n{len(args.seeds)} seeds, {args.iterations} iterations, N = {args.n} × "
          f"{args.prompts} = {args.n * args.prompts} samples per iteration, N' = "
          f"{args.probe_n}{pool}; held-out greedy accuracy on {args.n_test} problems"
          + ("" if args.report else f"; {time.perf_counter() - t0:.0f} s in all"))
    print(f"{'arm':<15}{'iter':>5}{'cum. samples':>14}   accuracy %: mean ± sd [min, max]")
    for arm in args.arms:
        for i in range(args.iterations + 1):
            samples = statistics.mean(c[i][0] for c in curves[arm])
            accs = [100 * c[i][1] for c in curves[arm]]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"{arm:<15}{i:>5}{samples:>14.0f}   {statistics.mean(accs):6.1f} ± {sd:4.1f} "
                  f"[{min(accs):5.1f}, {max(accs):5.1f}]")
        if seconds[arm]:
            print(f"{'':<34}({seconds[arm] / len(args.seeds):.0f} s per seed)")
    for arm in args.arms:
        reference = ARMS[arm][2]
        if reference is None:
            continue
        for unit, x in (("samples", lambda c: c), ("iterations", by_iteration)):
            ref, gvm = [x(c) for c in curves[reference]], [x(c) for c in curves[arm]]
            per_seed = [speedup(u, o) for u, o in zip(ref, gvm, strict=True)]
            print(f"speedup of {arm} over {reference} in {unit}: mean curves "
                  f"{speedup(mean_curve(ref), mean_curve(gvm))}; per seed {', '.join(per_seed)}")
    print_budgets(top, args.seeds, [arm for arm in args.arms if ARMS[arm][2] is not None])
    print(f"\nruns kept in {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

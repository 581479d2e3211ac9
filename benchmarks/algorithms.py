"""Every iteration type on the built-in task at an equal sample budget, over seeds.

    python benchmarks/algorithms.py [--seeds 0 1 2] [--iterations 3] [--prompts 1024] [--n 2]
        [--presets raft grpo dr-grpo dapo nft seed-grpo dpo] [--base params.yaml] ...

Each preset (cotflow/presets.py) runs `--iterations` iterations from the same warm start
(one per seed), with a budget of prompts × n samples per iteration: group methods draw
groups of 8 from budget / 8 prompts; DAPO's dynamic sampling may draw more, and the table
shows what each arm actually drew. Prints held-out greedy accuracy per iteration as
mean ± sd [min, max] over seeds. The seed papers' claims, with errors and verdicts, are
benchmarks/claims.py's table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from harness import add_arm_arguments, preset_params, run_jobs

DEFAULT_PRESETS = ["raft", "grpo", "dr-grpo", "dapo", "nft", "seed-grpo", "dpo"]


def row(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{statistics.mean(values):6.1f} ± {sd:4.1f} "
            f"[{min(values):5.1f}, {max(values):5.1f}]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arm_arguments(ap, prompts=1024, n=2)
    ap.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS)
    args = ap.parse_args()
    from cotflow.env import apply_defaults

    base = yaml.safe_load(args.base.read_text())
    top = args.workspace or Path(tempfile.mkdtemp(prefix="cotflow-algos-"))
    top.mkdir(parents=True, exist_ok=True)
    apply_defaults(top)
    curves: dict[str, list[list[tuple[int, float]]]] = {p: [] for p in args.presets}
    seconds: dict[str, float] = dict.fromkeys(args.presets, 0.0)
    t0 = time.perf_counter()
    jobs = {(seed, preset): preset_params(base, args, preset, seed, top)
            for seed in args.seeds for preset in args.presets}
    if args.jobs > 1 and args.warm_start is None:
        ap.error("--jobs needs --warm-start (arms then share nothing)")
    results = run_jobs(top, jobs, args.jobs, args.warm_start)
    for (seed, preset), (curve, spent) in results.items():
        curves[preset].append(curve)
        seconds[preset] += spent
        print(f"seed {seed} {preset}: " + ", ".join(f"{s}:{100 * a:.1f}%" for s, a in curve),
              flush=True)

    budget = args.prompts * args.n
    print(f"\n{len(args.seeds)} seeds × {args.iterations} iterations, budget {budget} samples "
          f"per iteration, held-out greedy accuracy on {args.n_test} problems; "
          f"{time.perf_counter() - t0:.0f} s in all")
    print(f"{'preset':<10}{'iter':>5}{'samples':>9}   accuracy %: mean ± sd [min, max]")
    for preset in args.presets:
        for i in range(args.iterations + 1):
            spent = statistics.mean(c[i][0] for c in curves[preset])
            print(f"{preset:<10}{i:>5}{spent:>9.0f}   "
                  f"{row([100 * c[i][1] for c in curves[preset]])}")
        print(f"{'':<10}{'':>5}{'':>9}   ({seconds[preset] / len(args.seeds):.0f} s per seed)")

    return 0


if __name__ == "__main__":
    sys.exit(main())

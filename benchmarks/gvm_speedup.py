"""Uniform RAFT against GVM-RAFT on the built-in task: held-out accuracy against samples.

    python benchmarks/gvm_speedup.py [--seeds 0 1 2] [--iterations 5] [--arms uniform gvm]
        [--prompts 512] [--n 4] [--probe-n 8] [--algorithm raft] [--base params.yaml] ...

Each arm runs the same stage functions that `dvc repro` runs (in this process, one workspace
per arm and seed, MLflow off), with the same per-iteration sample budget N = n × prompts;
arms of one seed share the warm start. Samples are counted cumulatively and include GVM's
probe (reused probe samples cost nothing). Prints, per arm, mean ± sd over seeds of held-out
accuracy at each iteration against mean cumulative samples, and the speedup of issue 4:

    speedup = samples uniform needs to reach its final accuracy
              / samples the GVM arm needs to reach that accuracy

(first crossing, linearly interpolated between iterations; per seed and on the mean curves).
A GVM arm that never reaches it gets "not reached" and a bound (< total uniform / total GVM).
Arms: uniform, gvm (fresh probe), gvm-reuse (`probe: reuse`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from harness import mean_curve, run_arm, samples_to_reach

ROOT = Path(__file__).resolve().parents[1]


def arm_params(base: dict[str, Any], args: argparse.Namespace, arm: str,
               seed: int) -> dict[str, Any]:
    raw = yaml.safe_load(yaml.safe_dump(base))  # a deep copy
    raw["seed"] = seed
    if args.threads:
        raw["threads"] = args.threads
    raw["tracking"]["enabled"] = False
    for key, value in (("n_train", args.n_train), ("n_test", args.n_test)):
        if value:
            raw["data"][key] = value
    if args.warmstart_steps is not None:
        raw["warmstart"]["steps"] = args.warmstart_steps
    a = raw["allocate"]
    a.update(prompts_per_iteration=args.prompts, n=args.n,
             method="uniform" if arm == "uniform" else "gvm")
    a["gvm"].update(probe_n=args.probe_n, probe="reuse" if arm == "gvm-reuse" else "sample")
    raw["iterations"] = {f"{i:03d}": {"algorithm": args.algorithm,
                                      "prev": "base" if i == 1 else f"iter-{i - 1:03d}"}
                         for i in range(1, args.iterations + 1)}
    return raw


def speedup(uniform: list[tuple[float, float]], other: list[tuple[float, float]]) -> str:
    target = uniform[-1][1]
    need_u = samples_to_reach(uniform, target)
    need_o = samples_to_reach(other, target)
    if need_o is None:
        return f"not reached (< {uniform[-1][0] / other[-1][0]:.2f}x)"
    if not need_o:
        return "reached at the warm start"
    return f"{need_u / need_o:.2f}x"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, default=ROOT / "params.yaml",
                    help="params to start from (data, model, warm start, train, evaluate)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["uniform", "gvm"],
                    choices=["uniform", "gvm", "gvm-reuse"])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=512, help="prompts per iteration")
    ap.add_argument("--n", type=int, default=4, help="uniform samples per prompt (N = n·prompts)")
    ap.add_argument("--probe-n", type=int, default=8, help="GVM's N'")
    ap.add_argument("--algorithm", default="raft", choices=["raft", "raft++"])
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--warmstart-steps", type=int, default=None)
    ap.add_argument("--workspace", type=Path, default=None, help="keep the runs here")
    ap.add_argument("--warm-start", type=Path, default=None,
                    help="an artifacts/base folder made with these params to start every seed "
                         "from (seeds then vary the RL phase only)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (params.yaml's)")
    args = ap.parse_args()
    if "uniform" not in args.arms:
        ap.error("--arms must include uniform (the speedup's reference)")
    from cotflow.env import apply_defaults

    base = yaml.safe_load(args.base.read_text())
    top = args.workspace or Path(tempfile.mkdtemp(prefix="cotflow-gvm-"))
    apply_defaults(top)
    curves: dict[str, list[list[tuple[int, float]]]] = {arm: [] for arm in args.arms}
    t0 = time.perf_counter()
    for seed in args.seeds:
        shared: Path | None = args.warm_start
        for arm in args.arms:
            root = top / f"seed-{seed}" / arm
            curves[arm].append(run_arm(root, arm_params(base, args, arm, seed), shared))
            shared = shared or root / "artifacts" / "base"
            print(f"seed {seed} {arm}: " + ", ".join(
                f"{s}:{100 * a:.1f}%" for s, a in curves[arm][-1]), flush=True)

    print(f"\n{len(args.seeds)} seeds, {args.iterations} iterations, N = {args.n} × "
          f"{args.prompts} = {args.n * args.prompts} samples per iteration, N' = {args.probe_n}, "
          f"algorithm {args.algorithm}; {time.perf_counter() - t0:.0f} s")
    print(f"{'arm':<11}{'iter':>5}{'cum. samples':>14}{'accuracy % (mean ± sd)':>26}")
    for arm in args.arms:
        for i in range(args.iterations + 1):
            samples = statistics.mean(c[i][0] for c in curves[arm])
            accs = [100 * c[i][1] for c in curves[arm]]
            sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"{arm:<11}{i:>5}{samples:>14.0f}{statistics.mean(accs):>18.1f} ± {sd:.1f}")
    for arm in args.arms:
        if arm == "uniform":
            continue
        per_seed = [speedup(u, o) for u, o in zip(curves["uniform"], curves[arm], strict=True)]
        print(f"speedup {arm} over uniform: mean curves "
              f"{speedup(mean_curve(curves['uniform']), mean_curve(curves[arm]))}; "
              f"per seed {', '.join(per_seed)}")
    if args.workspace is None:
        shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

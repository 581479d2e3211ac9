"""What the benchmarks share: run a pipeline's stages in this process, and read curves.

A run executes the same stage functions that `dvc repro` runs, one workspace per arm and
seed (MLflow off), and returns (cumulative samples, held-out greedy accuracy) per iteration.
Samples count every completion drawn: the sample stage's (DAPO refills included), GVM's
probe (reused probe samples cost nothing) and the critique stage's refinements.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

STAGES = ("allocate", "sample", "verify", "critique", "judge", "train", "evaluate")


def run_arm(root: Path, params: dict[str, Any],
            base_from: Path | None) -> list[tuple[int, float]]:
    """Run the warm start (or copy `base_from`) and every iteration of `params` in `root`;
    return `curve_of(root)`. A run already finished there with these params is kept (a
    benchmark run again continues where it stopped); a half-done one starts over."""
    from tasks.common import run_base, run_stage

    folders = ["base", *(f"iter-{key}" for key in params["iterations"])]
    last = root / "artifacts" / folders[-1] / "metrics.json"
    if last.exists() and same_run(yaml.safe_load((root / "params.yaml").read_text()), params,
                                  copied_base=base_from is not None):
        return curve_of(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if base_from is None:
        run_base(root, root / "params.yaml")
    else:
        shutil.copytree(base_from, root / "artifacts" / "base")
    for key in params["iterations"]:
        for stage in STAGES:
            run_stage(stage, key, root, root / "params.yaml")
    return curve_of(root)


def same_run(done: dict[str, Any], wanted: dict[str, Any], *, copied_base: bool) -> bool:
    """Whether a finished run's params give `wanted`'s results. A run on a copied warm start
    never read `warmstart` (that copy did), so that section alone may differ."""
    if copied_base:
        done, wanted = ({k: v for k, v in p.items() if k != "warmstart"} for p in (done, wanted))
    return done == wanted


def curve_of(root: Path, metric: str = "accuracy") -> list[tuple[int, float]]:
    """(cumulative samples, held-out `metric`: greedy accuracy, or sampled "pass@1") at the
    warm start and after each iteration of the run in `root`, from its stats: samples drawn
    by sample and by allocate's probe."""
    from cotflow.records import read_json

    params = yaml.safe_load((root / "params.yaml").read_text())
    curve = [(0, read_json(root / "artifacts/base/metrics.json")[metric])]
    spent = 0
    for key in params["iterations"]:
        folder = root / f"artifacts/iter-{key}"
        spent += read_json(folder / "stats/allocate.json").get("probe_samples", 0)
        sampled = read_json(folder / "stats/sample.json")
        # SPO's MC continuations are samples too (the sample stage's mc_samples).
        spent += sampled["completions"] + sampled.get("mc_samples", 0)
        # Critique-GRPO's refinements (and self-critiques) are policy samples too.
        critique = folder / "stats/critique.json"
        spent += read_json(critique).get("policy_samples", 0) if critique.is_file() else 0
        curve.append((spent, read_json(folder / "metrics.json")[metric]))
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


def speedup_ratio(uniform: list[tuple[float, float]],
                  other: list[tuple[float, float]]) -> float | None:
    """x needed by `uniform` to reach its final accuracy over x needed by `other` to reach
    it (x: samples, or iterations with `by_iteration`); None if `other` never does, inf if
    its start already does."""
    target = uniform[-1][1]
    need_u = samples_to_reach(uniform, target)
    need_o = samples_to_reach(other, target)
    if need_o is None or need_u is None:
        return None
    return need_u / need_o if need_o else float("inf")


def by_iteration(curve: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The curve against iterations: the paper's steps, which leave the probe uncounted."""
    return [(i, accuracy) for i, (_, accuracy) in enumerate(curve)]


def add_arm_arguments(ap: argparse.ArgumentParser, *, prompts: int, n: int) -> None:
    """The flags `preset_params` and `run_jobs` read, shared by the preset benchmarks."""
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--base", type=Path, default=root / "params.yaml",
                    help="params to start from (data, model, warm start, train, evaluate)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=prompts, help="prompts per iteration (× n)")
    ap.add_argument("--n", type=int, default=n,
                    help="samples per prompt (N = n·prompts; presets with groups of 8 draw "
                         "N/8 prompts × 8)")
    ap.add_argument("--n-test", type=int, default=400,
                    help="held-out problems (a --warm-start brings its own test set)")
    ap.add_argument("--warmstart-steps", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml setting for every arm, e.g. train.epochs=1")
    ap.add_argument("--jobs", type=int, default=1, help="arms run in parallel processes")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (params.yaml's)")
    ap.add_argument("--workspace", type=Path, default=None, help="keep the runs here")
    ap.add_argument("--warm-start", type=Path, default=None,
                    help="an artifacts/base folder made with these params to start every seed "
                         "from (seeds then vary the RL phase only)")


def preset_params(base: dict[str, Any], args: argparse.Namespace, preset: str, seed: int,
                  scratch: Path, name: str | None = None,
                  extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """`base` with the benchmark's settings, `args.set` then `extra` (KEY=VALUE, dotted),
    and `args.iterations` iterations of `preset` (cotflow/presets.py). Reads args.threads,
    n_test, prompts, n, warmstart_steps, set and iterations."""
    from cotflow.presets import apply_preset

    raw = yaml.safe_load(yaml.safe_dump(base, sort_keys=False))  # a deep copy
    raw["seed"] = seed
    raw["tracking"]["enabled"] = False
    if args.threads:
        raw["threads"] = args.threads
    raw["data"].update(n_test=args.n_test)
    raw["allocate"].update(prompts_per_iteration=args.prompts, n=args.n)
    raw["evaluate"].update(n_samples=1, pass_k=[1])  # greedy accuracy is what is compared
    if args.warmstart_steps is not None:
        raw["warmstart"]["steps"] = args.warmstart_steps
    for assignment in [*args.set, *extra]:
        dotted, _, value = assignment.partition("=")
        *sections, key = dotted.split(".")
        target = raw
        for section in sections:
            target = target[section]
        target[key] = yaml.safe_load(value)
    path = scratch / f"params-{name or preset}-{seed}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    apply_preset(path, [preset] * args.iterations)
    return yaml.safe_load(path.read_text())


def _timed_arm(root: Path, params: dict[str, Any],
               base_from: Path | None) -> tuple[list[tuple[int, float]], float]:
    t0 = time.perf_counter()
    curve = run_arm(root, params, base_from)
    print(f"done {root.parent.name} {root.name}: "
          + ", ".join(f"{s}:{100 * a:.1f}%" for s, a in curve), flush=True)
    return curve, time.perf_counter() - t0


def run_jobs(top: Path, jobs: dict[tuple[int, str], dict[str, Any]], processes: int,
             warm_start: Path | None) -> dict[tuple[int, str], tuple[list[tuple[int, float]],
                                                                  float]]:
    """Run each (seed, arm)'s params in top/seed-S/ARM: (curve, seconds) per job. In
    parallel processes only from a shared `warm_start`; without one, the first arm of each
    seed runs the base stages and the seed's other arms copy its warm start."""
    if processes > 1:
        if warm_start is None:
            raise ValueError("parallel arms need a shared warm start (--warm-start)")
        # Spawned, not forked: a fork would inherit this process's verifier forkserver (a
        # warm start prepared here starts one), which is not the child's to use.
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")
                                 ) as pool:
            futures = {job: pool.submit(_timed_arm, top / f"seed-{job[0]}" / job[1], params,
                                        warm_start) for job, params in jobs.items()}
            return {job: f.result() for job, f in futures.items()}
    results: dict[tuple[int, str], tuple[list[tuple[int, float]], float]] = {}
    made: dict[int, Path] = {}
    for (seed, arm), params in jobs.items():
        root = top / f"seed-{seed}" / arm
        results[(seed, arm)] = _timed_arm(root, params, warm_start or made.get(seed))
        made.setdefault(seed, root / "artifacts" / "base")
    return results

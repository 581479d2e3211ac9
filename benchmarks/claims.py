"""The seed papers' claims, side by side on the built-in task: one table of claim, paper's
figure, ours ± error, and whether it reproduced.

    python benchmarks/claims.py [--jobs 2] [--seeds 0 1] [--iterations 3] [--prompts 256]
        [--n-test 2000] [--eval-samples 2] [--warm-start DIR] [--workspace DIR]
    python benchmarks/claims.py --report --workspace DIR [--seeds ...]

Every arm is a preset users run (cotflow/presets.py) at the same samples per iteration
(--prompts groups of 8), from one shared warm start (the base stages run once unless
--warm-start names an artifacts/base made with these settings; presets with a warm start of
their own, TON's, get one each, shared by their seeds), through the stage functions `dvc repro`
runs (harness.py). Each iteration is evaluated on the same --n-test held-out problems:
greedy, and --eval-samples samples at temperature 1 (avg@k, the papers' sampled score).

Kinds of rows:
  difference  final sampled pass@1 of an arm minus its baseline's, paired on the same
              problems per seed (benchmarks/stats.py), pooled over seeds;
  speedup     samples (or iterations) the baseline needs to reach its own final pass@1 over
              those the arm needs (harness.speedup_ratio), per seed, mean ± se over seeds;
  rescue      of the training prompts the baseline sampled and never solved, the % the arm
              (which sampled them too) solved, by a sample or a refinement; mean ± se over seeds.
  dpo-steps   VerIPO: each DPO iteration's sampled pass@1 minus the iteration before it
              (paired per problem), pooled over DPO iterations and seeds;
  from-start  an arm's final sampled pass@1 minus the warm start's (paired), pooled;
  inconsistency  VerIPO: the last iteration's held-out inconsistency rate (correct greedy
              answers that do not follow from their steps) minus the first's, in points.
  length      % change of the final held-out greedy completion length, arm over baseline,
              per seed, mean ± se over seeds (TON; its per-level report follows the table).
A "no drop" row (dpo-steps, from-start) holds when the 95 % interval reaches 0 or above.
The `veripo` arms run the loop preset (grpo, dpo, grpo, dpo) per --iterations.

The verdict (stats.verdict): "reproduced" when the 95 % interval holds the paper's figure and
excludes no effect; "not reproduced" when it excludes the paper's figure; else "within
noise". The papers' figures come from much larger models on competition math
(specs/algorithms-a.md, -b.md); a difference in points transfers only as a direction and
rough size, which the table says by printing both. Later methods add rows to CLAIMS.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from claim_rows import ARMS, CLAIMS, NO_DROP, REFINEMENT_EXAMPLES, Claim
from gvm_speedup import print_budgets
from harness import (
    add_arm_arguments,
    by_iteration,
    curve_of,
    preset_params,
    run_jobs,
    speedup_ratio,
)
from stats import Estimate, mean_se, paired_difference, pooled, verdict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def arm_params(base: dict[str, Any], args: argparse.Namespace, arm: str, seed: int,
               scratch: Path) -> dict[str, Any]:
    spec = ARMS[arm]
    params = preset_params(base, args, spec.preset, seed, scratch, arm, extra=spec.sets)
    params["evaluate"].update(n_samples=args.eval_samples, pass_k=[1])
    # Every warm start has them, whichever arms this call runs: an arm's params (and so
    # whether a finished run of it is kept) must not depend on the other arms asked for.
    params["warmstart"]["refinement_examples"] = REFINEMENT_EXAMPLES
    if spec.steps_factor != 1:
        for entry in params["iterations"].values():
            train = entry["overrides"]["train"]
            train["mini_batch_size"] = max(1, math.ceil(
                train["mini_batch_size"] / spec.steps_factor))
    return params


def per_problem(run: Path, folder: str, level: int | None = None) -> dict[str, float]:
    """Sampled pass@1 of each held-out problem in `run`'s artifacts/`folder` (of difficulty
    `level` only, when given)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(run / "artifacts" / folder / "evaluation.parquet").to_pylist()
    return {r["id"]: r["sampled_correct"] / r["n_samples"] for r in rows
            if level is None or r["difficulty"] == level}


def last_folder(run: Path) -> str:
    keys = list(yaml.safe_load((run / "params.yaml").read_text())["iterations"])
    return f"iter-{keys[-1]}"


def solved_in_training(run: Path) -> tuple[set[str], set[str]]:
    """(prompts sampled, prompts solved) over every iteration of `run`: solved by a sample
    or by a Critique-GRPO refinement."""
    from cotflow.records import read_table
    from cotflow.verify.rewards import is_correct

    seen: set[str] = set()
    solved: set[str] = set()
    for key in yaml.safe_load((run / "params.yaml").read_text())["iterations"]:
        folder = run / "artifacts" / f"iter-{key}"
        for path, kind in (("verdicts.parquet", "verdicts"), ("critiques.parquet", "critiques")):
            table = read_table(folder / path, kind)
            seen.update(table["prompt_id"])
            solved.update(p for p, r in zip(table["prompt_id"], table["reward"], strict=True)
                          if is_correct(r))
    return seen, solved


def rescued(arm: Path, baseline: Path) -> tuple[float, int] | None:
    """% of the prompts the baseline sampled and never solved in training that `arm` (which
    sampled them too) solved at least once; and how many such prompts there were."""
    base_seen, base_solved = solved_in_training(baseline)
    seen, solved = solved_in_training(arm)
    never = (base_seen - base_solved) & seen
    return (100 * len(never & solved) / len(never), len(never)) if never else None


def folders(run: Path) -> list[tuple[str, str]]:
    """(folder, algorithm) of `run`'s iterations in order, after ("base", "")."""
    its = yaml.safe_load((run / "params.yaml").read_text())["iterations"]
    return [("base", "")] + [(f"iter-{k}", e["algorithm"]) for k, e in its.items()]


def within_arm(claim: Claim, run: Path) -> list[Estimate]:
    """The paired pass@1 differences (points) a no-drop row of one seed pools: each DPO
    iteration against the one before (dpo-steps), or the last against the start."""
    order = folders(run)
    if claim.kind == "from-start":
        steps = [(order[-1][0], "base")]
    else:
        steps = [(f, order[i - 1][0]) for i, (f, algo) in enumerate(order) if algo == "veripo"]
    out = [paired_difference(per_problem(run, a), per_problem(run, b)) for a, b in steps]
    return [Estimate(100 * e.mean, 100 * e.se, e.n) for e in out]


def folder_names(run: Path) -> list[str]:
    """The warm start's folder and each iteration's, in order."""
    keys = list(yaml.safe_load((run / "params.yaml").read_text())["iterations"])
    return ["base", *(f"iter-{k}" for k in keys)]


def final_metrics(run: Path) -> dict[str, Any]:
    from cotflow.records import read_json

    return read_json(run / "artifacts" / last_folder(run) / "metrics.json")


def estimate(claim: Claim, top: Path, seeds: list[int]) -> tuple[Estimate | None, str]:
    """Our figure for `claim` and a per-seed detail line."""
    from cotflow.records import read_json

    runs = {s: (top / f"seed-{s}" / claim.arm, top / f"seed-{s}" / claim.baseline)
            for s in seeds}
    if claim.kind == "rescue":
        found = [rescued(a, b) for a, b in runs.values()]
        detail = ", ".join("none" if f is None else f"{f[0]:.1f} % of {f[1]}" for f in found)
        values = [f[0] for f in found if f is not None]
        return (mean_se(values) if values else None), detail
    if claim.kind in NO_DROP:
        per_step = [e for a, _ in runs.values() for e in within_arm(claim, a)]
        return pooled(per_step), ", ".join(str(e) for e in per_step)
    if claim.kind == "inconsistency":
        changes = []
        for a, _ in runs.values():
            order = folders(a)
            rate = [read_json(a / "artifacts" / f / "metrics.json")["inconsistency_rate"]
                    for f in (order[1][0], order[-1][0])]
            changes.append(100 * (rate[1] - rate[0]))
        return mean_se(changes), ", ".join(f"{c:+.2f}" for c in changes)
    if claim.kind == "difference":
        per_seed = seed_differences(top, seeds, claim)
        return pooled(per_seed), ", ".join(str(e) for e in per_seed)
    if claim.kind == "length":
        per_seed = [100 * (final_metrics(a)["mean_completion_tokens"]
                           / final_metrics(b)["mean_completion_tokens"] - 1)
                    for a, b in runs.values()]
        return mean_se(per_seed), ", ".join(f"{x:+.1f} %" for x in per_seed)
    x = by_iteration if claim.kind == "speedup-iterations" else (lambda c: c)
    ratios = [speedup_ratio(x(curve_of(b, "pass@1")), x(curve_of(a, "pass@1")))
              for a, b in runs.values()]
    detail = ", ".join("not reached" if r is None else f"{r:.2f}x" for r in ratios)
    finite = [r for r in ratios if r is not None and math.isfinite(r)]
    if len(finite) < len(ratios):
        # A seed that never reached the baseline's accuracy has no ratio to average.
        return None, detail
    return mean_se(finite), detail


def seed_differences(top: Path, seeds: list[int], claim: Claim,
                     level: int | None = None) -> list[Estimate]:
    """Per seed, the arm's final sampled pass@1 minus its baseline's in points, paired on
    the same held-out problems (of difficulty `level` only, when given)."""
    out = []
    for s in seeds:
        a, b = top / f"seed-{s}" / claim.arm, top / f"seed-{s}" / claim.baseline
        e = paired_difference(per_problem(a, last_folder(a), level),
                              per_problem(b, last_folder(b), level))
        out.append(Estimate(100 * e.mean, 100 * e.se, e.n))
    return out


def levels_of(run: Path) -> list[int]:
    import pyarrow.parquet as pq

    table = pq.read_table(run / "artifacts" / "base" / "evaluation.parquet", columns=["difficulty"])
    return sorted(set(table["difficulty"].to_pylist()))


def difference_levels(top: Path, seeds: list[int], arms: set[str]) -> list[str]:
    """Each difference row of the table split by difficulty level: pooled paired difference
    ± se (n problems per seed), so a gain that lives in the multi-step levels shows."""
    lines = []
    for c in CLAIMS:
        if c.kind != "difference" or not {c.arm, c.baseline} <= arms:
            continue
        run = top / f"seed-{seeds[0]}" / c.arm
        cells = []
        for d in levels_of(run):
            e = pooled(seed_differences(top, seeds, c, d))
            cells.append(f"L{d} {e.mean:+.1f}±{e.se:.1f}")
        lines.append(f"  {c.arm} − {c.baseline}, pass@1 pts by level: " + ", ".join(cells))
    return lines


def table(top: Path, seeds: list[int], arms: set[str]) -> list[str]:
    lines = [f"{'claim':<50}{'paper':>8}{'ours':>18}   {'verdict':<20}per seed / source"]
    for c in CLAIMS:
        if not {c.arm, c.baseline} <= arms:
            continue
        ours, detail = estimate(c, top, seeds)
        signed = c.kind in ("difference", "length") or c.kind in NO_DROP or (
            c.kind == "inconsistency")
        unit = {"length": " %"}.get(c.kind, "x" if c.kind.startswith("speedup") else " pts")
        paper = f"{c.paper:+.1f}{unit}" if signed else f"{c.paper:.1f}{unit}"
        if c.kind == "rescue":  # the paper gives a direction, no figure: ours > 0 or not
            shown = "none" if ours is None else f"{ours.mean:.1f} ± {ours.se:.1f} %"
            judged = ("not reproduced" if ours is None or ours.high <= 0 else
                      "reproduced" if ours.low > 0 else "within noise")
            lines.append(f"{c.text:<50}{'> 0 %':>8}{shown:>18}   {judged:<20}{detail}; "
                         f"{c.source}")
            continue
        if ours is None:
            shown, judged = "not reached", "not reproduced"
        else:
            shown = f"{ours.mean:+.2f} ± {ours.se:.2f}" if signed else (
                f"{ours.mean:.2f} ± {ours.se:.2f}")
            judged = (("holds (no drop)" if ours.high >= 0 else "not reproduced (drops)")
                      if c.kind in NO_DROP else
                      verdict(ours, c.paper, null=0.0 if signed else 1.0))
        lines.append(f"{c.text:<50}{paper:>8}{shown:>18}   {judged:<20}{detail}; {c.source}")
    return lines


def curves_report(top: Path, seeds: list[int], arms: list[str]) -> list[str]:
    from cotflow.records import read_json

    width = max([13, *(len(a) + 1 for a in arms)])
    lines = [f"{'arm':<{width}}{'seed':>5}  pass@1 % (greedy %) per iteration; optimizer steps"]
    for arm in arms:
        for s in seeds:
            run = top / f"seed-{s}" / arm
            names = folder_names(run)
            points = [read_json(run / "artifacts" / f / "metrics.json") for f in names]
            steps = [read_json(run / "artifacts" / f / "stats/train.json")["optimizer_steps"]
                     for f in names[1:]]
            rates = [m["inconsistency_rate"] for m in points if "inconsistency_rate" in m]
            lines.append(f"{arm:<{width}}{s:>5}  " + "  ".join(
                f"{100 * m['pass@1']:.1f} ({100 * m['accuracy']:.1f})" for m in points)
                + f"; {steps}" + (f"; inconsistent % {[round(100 * r, 1) for r in rates]}"
                                  if rates else ""))
    return lines


def warm_start_groups(arms: list[str]) -> dict[tuple, list[str]]:
    """Arms by the warm start they need (presets.WARM_STARTS; () for params.yaml's own)."""
    from cotflow.presets import WARM_STARTS

    groups: dict[tuple, list[str]] = {}
    for arm in arms:
        groups.setdefault(tuple(sorted(WARM_STARTS.get(ARMS[arm].preset, {}).items())),
                          []).append(arm)
    return groups


def levels_report(top: Path, seeds: list[int], arms: list[str]) -> list[str]:
    """Per level, mean ± se over seeds: held-out greedy accuracy and completion length at
    the last iteration, and the skip ratio at every iteration; the skip ratios are also
    drawn (ton_skip_ratio.png in `top`)."""
    from cotflow.plots import draw_skip_ratio, skip_levels
    from cotflow.records import read_json

    lines, panels = [], {}
    for arm in arms:
        runs = [top / f"seed-{s}" / arm for s in seeds]
        series = [[read_json(r / "artifacts" / f / "metrics.json") for f in folder_names(r)]
                  for r in runs]
        lines.append(f"\n{arm}: per level, held-out greedy, mean ± se over {len(runs)} seeds: "
                     "accuracy % and tokens at the last iteration; skip ratio per iteration")
        panels[arm] = {}
        for d in skip_levels(series[0][-1]):
            acc = mean_se([100 * m[-1][f"accuracy_difficulty_{d}"] for m in series])
            tokens = mean_se([m[-1][f"mean_completion_tokens_difficulty_{d}"] for m in series])
            skips = [mean_se([m[i][f"skip_ratio_difficulty_{d}"] for m in series])
                     for i in range(len(series[0]))]
            panels[arm][d] = [(e.mean, e.se) for e in skips]
            lines.append(f"  level {d}: {acc.mean:5.1f} ± {acc.se:.1f} %, {tokens.mean:5.1f} ± "
                         f"{tokens.se:.1f} tokens; skip " + " ".join(
                             f"{e.mean:.2f}±{e.se:.2f}" for e in skips))
    path = draw_skip_ratio(panels, top / "ton_skip_ratio.png")
    lines.append(f"skip ratio per level over iterations: {path}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arm_arguments(ap, prompts=256, n=8)
    ap.set_defaults(seeds=[0, 1], n_test=2000)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--eval-samples", type=int, default=2,
                    help="samples per held-out problem for sampled pass@1")
    ap.add_argument("--report", action="store_true",
                    help="run nothing: print the table of the runs kept in --workspace")
    args = ap.parse_args()
    if args.report and args.workspace is None:
        ap.error("--report needs --workspace")
    from cotflow.env import apply_defaults
    from tasks.common import run_base

    top = args.workspace or Path(tempfile.mkdtemp(prefix="cotflow-claims-"))
    top.mkdir(parents=True, exist_ok=True)
    apply_defaults(top)
    base = yaml.safe_load(args.base.read_text())
    t0 = time.perf_counter()
    if not args.report:
        jobs = {(seed, arm): arm_params(base, args, arm, seed, top)
                for seed in args.seeds for arm in args.arms}
        for own, arms in warm_start_groups(args.arms).items():
            # One warm start for every arm and seed of a kind: seeds vary the RL phase only.
            warm = None if own else args.warm_start
            if warm is None:
                ws = top / ("warm-start" if not own else f"warm-start-{arms[0]}")
                ws.mkdir(exist_ok=True)
                first = jobs[(args.seeds[0], arms[0])]
                (ws / "params.yaml").write_text(yaml.safe_dump(first, sort_keys=False))
                if not (ws / "artifacts/base/evaluation.parquet").exists():
                    run_base(ws, ws / "params.yaml")
                warm = ws / "artifacts" / "base"
            run_jobs(top, {(s, a): jobs[(s, a)] for s in args.seeds for a in arms}, args.jobs,
                     warm)
    print(f"\n{len(args.seeds)} seeds, {args.iterations} iterations, {args.prompts} prompts × "
          f"{args.n} samples per iteration, held-out: {args.n_test} problems, greedy and "
          f"{args.eval_samples} samples each"
          + ("" if args.report else f"; {time.perf_counter() - t0:.0f} s in all"))
    print("\n".join(curves_report(top, args.seeds, args.arms)))
    print()
    print("\n".join(table(top, args.seeds, set(args.arms))))
    by_level = difference_levels(top, args.seeds, set(args.arms))
    if by_level:
        print("\nthe difference rows by held-out difficulty level (paired, pooled over seeds)")
        print("\n".join(by_level))
    print_budgets(top, args.seeds, [a for a in args.arms if ARMS[a].preset.startswith("gvm")])
    think = [a for a in args.arms if () not in warm_start_groups([a])]
    if think:
        print("\n".join(levels_report(top, args.seeds, think)))
    print(f"\nruns kept in {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

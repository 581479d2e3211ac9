"""How hard each level of the built-in task is for a warm start: per-level solve rates and
the spread of per-prompt solve rates p that GVM's budgets and DAPO's filter act on.

    python benchmarks/task_difficulty.py [--base DIR] [--params params.yaml]
        [--per-level 200] [--n 16] [--workspace DIR]

`--base` is the artifacts/base folder of the base stages (model, data, warmstart, baseline: the
splits and the warm start) made with `--params`; without it, they run first in a scratch
workspace. Per level, on the first `--per-level` training prompts of that level: greedy
accuracy (final answer, as the evaluate stage grades it), sampled solve rate over `--n`
samples at the sample stage's settings, the training reward's rate (verify.check_steps: a
right answer through a wrong step earns 0), mean completion tokens, and the shares of
prompts with p = 0 and p = 1 (p: the training reward's rate over the n samples, what a GRPO
group of n sees). Then a histogram of p.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BINS = ((0.0, 0.0), (0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0), (1.0, 1.0))


def bin_label(lo: float, hi: float) -> str:
    if lo == hi:
        return f"p = {lo:g}"
    return f"{lo:g} < p {'<' if hi == 1.0 else '<='} {hi:g}"


def histogram(ps: list[float]) -> list[tuple[str, int]]:
    """Counts of p in {0}, the open quarters between, and {1}: the ends are what GVM and
    DAPO's filter treat apart."""
    out = []
    for lo, hi in BINS:
        if lo == hi:
            count = sum(p == lo for p in ps)
        else:
            count = sum(lo < p < hi or (p == hi and hi not in (0.0, 1.0)) for p in ps)
        out.append((bin_label(lo, hi), count))
    return out


def measure(params: Path, base: Path, per_level: int, n: int) -> dict[int, dict[str, list]]:
    """Per level: greedy_ok, sampled_ok (per sample), reward p (per prompt), tokens."""
    from cotflow.config import read_params
    from cotflow.records import read_table, rows_of
    from cotflow.verify.grade import CORRECT
    from cotflow.verify.pool import VerifierPool
    from cotflow.verify.scoring import rewards_of
    from models.prompts import policy_prompts
    from models.sampler import make_sampler

    cfg = read_params(params)
    train = rows_of(read_table(base / "train.parquet", "problems"))
    chosen: list[dict] = []
    taken: dict[int, int] = defaultdict(int)
    for p in train:
        if taken[p["difficulty"]] < per_level:
            taken[p["difficulty"]] += 1
            chosen.append(p)
    fmt = policy_prompts(cfg.data, base / "policy")
    prompts = fmt.for_sampler([fmt.text(p["question"]) for p in chosen])
    s = cfg.sample
    with make_sampler(s.backend, base / "policy", batch_size=s.batch_size, threads=cfg.threads,
                      serving=cfg.serving, seed=cfg.seed) as sampler:
        greedy = sampler.generate(prompts, max_new_tokens=s.max_new_tokens, temperature=1.0,
                                  top_p=1.0, seed=cfg.seed, greedy=True)
        sampled = sampler.generate([q for q in prompts for _ in range(n)],
                                   max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                   top_p=s.top_p, seed=cfg.seed + 1)
    golds = [p["answer"] for p in chosen]
    v = cfg.verify
    with VerifierPool(workers=v.workers, timeout_s=v.timeout_s, memory_mb=v.memory_mb) as pool:
        greedy_ok = [g.verdict == CORRECT for g in pool.grade_many(
            list(zip(golds, [c.text for c in greedy], strict=True)))]
        grades, rewards, _ = rewards_of(v, pool, [g for g in golds for _ in range(n)],
                                        [c.text for c in sampled])
    out: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for i, p in enumerate(chosen):
        level = out[p["difficulty"]]
        level["greedy_ok"].append(greedy_ok[i])
        level["sampled_ok"].extend(g.verdict == CORRECT for g in grades[i * n:(i + 1) * n])
        level["p"].append(sum(rewards[i * n:(i + 1) * n]) / n)
        level["tokens"].extend(c.num_tokens for c in sampled[i * n:(i + 1) * n])
    return out


def report(levels: dict[int, dict[str, list]], n: int) -> str:
    def pct(xs: list) -> str:
        return f"{100 * statistics.mean(xs):.1f}"

    lines = [f"{'level':>5}{'prompts':>9}{'greedy %':>10}{'sampled %':>11}{'reward %':>10}"
             f"{'p = 0 %':>9}{'p = 1 %':>9}{'tokens':>8}"]
    every: list[float] = []
    for d in sorted(levels):
        r = levels[d]
        every.extend(r["p"])
        lines.append(f"{d:>5}{len(r['p']):>9}{pct(r['greedy_ok']):>10}{pct(r['sampled_ok']):>11}"
                     f"{pct(r['p']):>10}{pct([p == 0 for p in r['p']]):>9}"
                     f"{pct([p == 1 for p in r['p']]):>9}"
                     f"{statistics.mean(r['tokens']):>8.1f}")
    lines.append(f"\nper-prompt p over n = {n} samples (training reward), all levels:")
    total = len(every)
    for label, count in histogram(every):
        share = count / total if total else 0.0
        lines.append(f"  {label:<16}{count:>6}  {100 * share:5.1f} %  {'#' * round(50 * share)}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--base", type=Path, default=None,
                    help="artifacts/base of a base-stage run with --params (else they run)")
    ap.add_argument("--per-level", type=int, default=200)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--workspace", type=Path, default=None)
    args = ap.parse_args()
    base = args.base
    if base is None:
        import shutil

        from tasks.common import run_base

        ws = args.workspace or Path(tempfile.mkdtemp(prefix="cotflow-difficulty-"))
        ws.mkdir(parents=True, exist_ok=True)
        shutil.copy(args.params, ws / "params.yaml")
        run_base(ws, ws / "params.yaml")
        base = ws / "artifacts" / "base"
    levels = measure(args.params, base, args.per_level, args.n)
    print(report(levels, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())

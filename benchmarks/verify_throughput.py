"""Verify throughput: cotflow's VerifierPool against math-verify called in one process.

    python benchmarks/verify_throughput.py [--n 400] [--workers 2] [--rounds 3] [--limit-s 300]

Two answer sets: clean (half plain numbers, half LaTeX that needs sympy: fractions, roots,
sets, intervals, text) and the same with 10 % replaced by the adversarial corpus of
tests/adversarial.py (code injection, power towers, deep nesting, megabyte answers,
look-alikes, malformed LaTeX). Prints answers/s for each, the verdict counts, the slowest
answer, and whether an injection ran (a canary file). math-verify runs with its own
signal-based limits set to the pool's (1 s); it runs in a child process so that an answer
it cannot interrupt is reported as "did not finish in --limit-s" instead of hanging. Both
start with the same warm parser (the pool's workers inherit theirs from its fork server).

The machine is shared, so each round runs the pool and math-verify back to back on the same
set and the speedup is the median of the rounds' ratios; the target (issue 12) is the pool
at >= 1.8x math-verify's answers/s on the clean set.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET = 1.8  # pool / math-verify answers/s on clean answers

LATEX = [  # (gold, predicted answer) templates; {a}, {b} are filled with random ints
    ("{a}/{b}", r"\frac{{{a}}}{{{b}}}"),
    (r"\frac{{{a}}}{{{b}}}", r"\dfrac{{{a}}}{{{b}}}"),
    (r"{a}\sqrt{{2}}", r"\sqrt{{{a2}}}"),
    (r"\{{{a},{b}\}}", r"\{{{b},{a}\}}"),
    (r"[{a},{c})", r"[{a}, {c})"),
    (r"x^2+{a}", r"{a}+x^2"),
    (r"\text{{(B)}}", "B"),
    ("{a}", r"{a}\text{{ cm}}"),
]


def answer_sets(n: int, seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    from tests.adversarial import corpus

    rng = random.Random(seed)
    clean = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(2, 99)
        if i % 2 == 0:
            right = rng.random() < 0.7
            clean.append((str(a * b), f"so \\boxed{{{a * b if right else a * b + 1}}}"))
        else:
            gold, pred = rng.choice(LATEX)
            fill = {"a": a, "b": b, "a2": 2 * a * a, "c": a + b}
            clean.append((gold.format(**fill), f"so \\boxed{{{pred.format(**fill)}}}"))
    hostile = [(g, c) for _, g, c in corpus(canary_path())]
    rng.shuffle(hostile)
    mixed = list(clean)
    for k, i in enumerate(rng.sample(range(n), n // 10)):
        mixed[i] = hostile[k % len(hostile)]
    return {"clean": clean, "10% adversarial": mixed}


def canary_path() -> Path:
    return Path(tempfile.gettempdir()) / "cotflow-verify-bench-canary"


def run_pool(pairs: list[tuple[str, str]], workers: int) -> dict:
    from cotflow.verify.pool import VerifierPool

    with VerifierPool(workers=workers, timeout_s=1.0, memory_mb=1024) as pool:  # ready
        start = time.perf_counter()
        grades = pool.grade_many(pairs)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "verdicts": Counter(g.verdict for g in grades)}


def run_math_verify(pairs: list[tuple[str, str]]) -> dict:
    """math-verify as commonly called: parse the completion and the gold, verify, 1 s limits."""
    import logging

    import math_verify

    from cotflow.verify.grade import TYPICAL_PAIRS

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    for gold, answer in TYPICAL_PAIRS:  # the warm-up the pool's fork server does
        math_verify.verify(math_verify.parse(f"${gold}$"), math_verify.parse(f"${answer}$"))
    start = time.perf_counter()
    verdicts: Counter = Counter()
    slowest = 0.0
    for gold, completion in pairs:
        t = time.perf_counter()
        try:
            pred = math_verify.parse(completion, parsing_timeout=1)
            ok = bool(pred) and math_verify.verify(math_verify.parse(f"${gold}$",
                                                                     parsing_timeout=1),
                                                   pred, timeout_seconds=1)
            verdicts["correct" if ok else ("incorrect" if pred else "unparseable")] += 1
        except Exception as err:  # noqa: BLE001 - counted, as a crash would be
            verdicts[f"error:{type(err).__name__}"] += 1
        slowest = max(slowest, time.perf_counter() - t)
    return {"seconds": time.perf_counter() - start, "verdicts": verdicts, "slowest": slowest}


def run_math_verify_child(n: int, name: str, limit_s: float) -> tuple[dict | None, str]:
    """math-verify on one set in a child process: (result, or None; what to print)."""
    try:
        r = subprocess.run([sys.executable, __file__, "--n", str(n), "--child", name],
                           capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return None, f"did not finish in {limit_s:.0f} s"
    if r.returncode != 0:
        return None, f"crashed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}"
    mv = json.loads(r.stdout.strip().splitlines()[-1])
    return mv, (f"{n / mv['seconds']:8.1f} answers/s ({mv['seconds']:.1f} s, "
                f"slowest answer {mv['slowest']:.1f} s) {mv['verdicts']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit-s", type=float, default=300.0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # math-verify's process
    args = ap.parse_args()
    sets = answer_sets(args.n)
    if args.child:
        out = run_math_verify(sets[args.child])
        print(json.dumps({**out, "verdicts": dict(out["verdicts"])}))
        return
    print(f"{args.n} answers per set; cotflow pool: {args.workers} workers, 1 s hard limit; "
          f"math-verify: one process, 1 s signal limits; {args.rounds} rounds")
    ratios: dict[str, list[float]] = {name: [] for name in sets}
    for r in range(1, args.rounds + 1):
        for name, pairs in sets.items():
            canary_path().unlink(missing_ok=True)
            pool = run_pool(pairs, args.workers)
            ran = canary_path().exists()
            pool_rate = len(pairs) / pool["seconds"]
            print(f"{r}  {name:16s} cotflow pool : {pool_rate:8.1f} answers/s "
                  f"({pool['seconds']:.1f} s) {dict(pool['verdicts'])}; injection ran: {ran}")
            canary_path().unlink(missing_ok=True)
            mv, what = run_math_verify_child(args.n, name, args.limit_s)
            print(f"{r}  {name:16s} math-verify  : {what}; "
                  f"injection ran: {canary_path().exists()}")
            if mv is not None:
                ratios[name].append(pool_rate / (len(pairs) / mv["seconds"]))
    canary_path().unlink(missing_ok=True)
    for name, rs in ratios.items():
        if rs:
            print(f"speedup, {name}: {statistics.median(rs):.2f}x math-verify (median of "
                  f"{', '.join(f'{x:.2f}' for x in rs)})")
    clean = ratios["clean"]
    met = bool(clean) and statistics.median(clean) >= TARGET
    print(f"target: pool >= {TARGET}x math-verify on clean answers: "
          f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Do critiques help the policy? Refinement success rate against a fresh sample's pass@1 on
the failed responses, per critique type, from one warm start (Critique-GRPO,
specs/algorithms-a.md §3).

    python benchmarks/critique_refinement.py [--refinement-examples 2000] [--prompts 128]
        [--types indicative indicative_gt cot self] [--workspace DIR] [--params FILE]
        [--set KEY=VALUE ...]

Builds the warm start of --params (params.yaml) with `warmstart.refinement_examples` examples of the
refinement format (0: none, to see what teaching buys), samples 8 responses for --prompts
training prompts, grades them, then runs the critique stage once per critique type. Per
type it prints: the share of incorrect responses whose refinement is correct; a fresh
sample's pass@1 on the same prompts (the prompt's other responses, leave-one-out); the
share of all-wrong prompts whose selected refinement is correct; the share of critiques
that fell back to indicative_gt.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TYPES = ("indicative", "indicative_gt", "cot", "self")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refinement-examples", type=int, default=2000)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--types", nargs="+", default=list(TYPES), choices=TYPES)
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml",
                    help="the params to start from (e.g. tests/data/params.micro.yaml)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="dotted params to change, e.g. warmstart.steps=400")
    args = ap.parse_args()
    from cotflow.env import apply_defaults
    from cotflow.records import read_json
    from tasks.common import run_base, run_stage

    root = args.workspace or Path(tempfile.mkdtemp(prefix="cotflow-critique-"))
    root.mkdir(parents=True, exist_ok=True)
    apply_defaults(root)
    params = yaml.safe_load(args.params.read_text())
    for assignment in args.set:
        dotted, _, value = assignment.partition("=")
        *sections, key = dotted.split(".")
        target = params
        for section in sections:
            target = target[section]
        target[key] = yaml.safe_load(value)
    params["tracking"]["enabled"] = False
    params["data"]["n_test"] = args.n_test
    params["warmstart"]["refinement_examples"] = args.refinement_examples
    params["allocate"].update(prompts_per_iteration=args.prompts, n=8)
    path = root / "params.yaml"

    def write(critique: str) -> None:
        params["iterations"] = {"001": {"algorithm": "critique-grpo", "prev": "base",
                                        "overrides": {"algorithms": {"critique-grpo": {
                                            "critique": critique}}}}}
        path.write_text(yaml.safe_dump(params, sort_keys=False))

    write(args.types[0])
    if not (root / "artifacts/base/metrics.json").exists():
        run_base(root, path)
    base = read_json(root / "artifacts/base/metrics.json")
    for stage in ("allocate", "sample", "verify"):
        run_stage(stage, "1", root, path)
    verify = read_json(root / "artifacts/iter-001/stats/verify.json")
    print(f"\nwarm start with {args.refinement_examples} refinement examples "
          f"(+{args.refinement_examples // 3} self-critique): held-out greedy "
          f"{100 * base['accuracy']:.1f} %; {args.prompts} prompts × 8, training reward "
          f"{100 * verify['mean_reward']:.1f} %")
    print(f"{'critique':<15}{'refined ok':>11}{'fresh ok':>10}{'rescued':>9}{'fallback':>10}"
          f"{'chars':>7}{'max prompt':>12}")
    for critique in args.types:
        write(critique)
        s = run_stage("critique", "1", root, path)
        print(f"{critique:<15}{100 * s['refinement_success_rate']:>10.1f}%"
              f"{100 * s['fresh_pass_rate_on_failed']:>9.1f}%"
              f"{100 * s['rescued_share']:>8.1f}%{100 * s['fallback_share']:>9.1f}%"
              f"{s['mean_critique_chars']:>7.1f}{s['max_refinement_prompt_tokens']:>12}")
    print(f"\nworkspace: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

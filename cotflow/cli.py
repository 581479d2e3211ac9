"""The `cotflow` command line.

    cotflow run                        the pipeline as a Prefect flow (DVC decides what is stale)
    cotflow validate                   check params.yaml and what it names (dvc.yaml's first stage)
    cotflow stage NAME --iteration K   one stage in this process (what dvc.yaml runs)
    cotflow show ARTIFACT              print a parquet or JSON artifact
    cotflow report [--out report/]     an HTML page comparing the iterations (no network)
    cotflow eval MODEL [-k K] [...]    a checkpoint on any source: avg@k, pass@k, maj@k (JSON)
    cotflow preset NAME [NAME ...]     rewrite params.yaml's iterations from presets
    cotflow deploy --cron "0 2 * * *"  a scheduled Prefect deployment of `cotflow run`
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cotflow.env import apply_defaults


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cotflow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("."), help="workspace (holds dvc.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the pipeline as a Prefect flow")
    sub.add_parser("validate", help="check params.yaml, its data, model and extras")
    st = sub.add_parser("stage", help="run one stage in this process")
    st.add_argument("name")
    st.add_argument("--iteration", default=None)
    dp = sub.add_parser("deploy", help="a Prefect deployment of the pipeline, on a schedule")
    dp.add_argument("--name", default="cotflow", help="deployment name")
    dp.add_argument("--pool", default="cotflow", help="work pool its runs go to")
    dp.add_argument("--pool-type", default="process",
                    help="type of the pool when it must be created (only process is created "
                         "here; make docker/kubernetes pools with `prefect work-pool create`)")
    dp.add_argument("--cron", default=None, help='schedule, e.g. "0 2 * * *"; none: on demand')
    dp.add_argument("--timezone", default="UTC")
    sh = sub.add_parser("show", help="print an artifact")
    sh.add_argument("artifact", type=Path)
    sh.add_argument("--limit", type=int, default=20)
    rp = sub.add_parser("report", help="an HTML page comparing the iterations")
    rp.add_argument("--out", type=Path, default=None,
                    help="folder for index.html and its PNGs (default: <root>/report)")
    rp.add_argument("--mlflow-ui", default="http://127.0.0.1:5000",
                    help="base URL of the MLflow UI the run links point to")
    ev = sub.add_parser("eval", help="evaluate a checkpoint: avg@k, pass@k, maj@k, per level",
                        description="Greedy and k sampled completions per problem of one split; "
                        "defaults from --root's params.yaml (else the project's).")
    ev.add_argument("model", metavar="MODEL", type=Path, help="a save_pretrained folder, e.g. "
                    "artifacts/iter-003/policy")
    ev.add_argument("--source", default=None,
                    help="builtin, a .jsonl/.json/.parquet file, reasoning-gym:TASK, champ "
                    "or a Hub id (data.source)")
    ev.add_argument("--split", default="test", help="test | train | a Hub split name")
    ev.add_argument("--n", type=int, default=None, help="the split's first N problems (all)")
    ev.add_argument("-k", type=int, default=None, help="samples per problem "
                    "(evaluate.n_samples)")
    ev.add_argument("--temperature", type=float, default=None, help="(evaluate.temperature)")
    ev.add_argument("--max-new-tokens", type=int, default=None,
                    help="(evaluate.max_new_tokens)")
    ev.add_argument("--format", dest="fmt", metavar="FORMAT", default=None,
                    help="where completions state the answer (verify.format)")
    ev.add_argument("--columns", default=None, help="over data.columns, e.g. "
                    "question=problem,answer=solution,difficulty=level,subject=type")
    ev.add_argument("--answer-format", default=None, help="(data.answer_format)")
    ev.add_argument("--seed", type=int, default=None, help="sampling seed (seed)")
    ev.add_argument("--out", type=Path, default=Path("eval.json"), help="the JSON written")
    ev.add_argument("--mlflow", action="store_true",
                    help="also log a run (tag cotflow.kind=eval) in the workspace's MLflow store")
    pr = sub.add_parser("preset", help="set params.yaml's iterations from presets")
    pr.add_argument("names", nargs="+", help="one preset per iteration, or one with -n")
    pr.add_argument("-n", "--iterations", type=int, default=None,
                    help="repeat a single preset this many times")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = args.root.resolve()
    params = root / "params.yaml"  # the one DVC tracks: no other file may drive a run
    apply_defaults(root)
    try:
        if args.command == "stage":
            from cotflow.stage_server import run_stage_in_server

            # Under `cotflow run`: a fork of its warm stage server runs it (stage_server.py).
            code = run_stage_in_server(sys.argv[1:] if argv is None else argv)
            if code is not None:
                return code
            from cotflow.runlock import check_stage_allowed
            from tasks.common import run_stage

            check_stage_allowed(root)
            os.chdir(root)
            run_stage(args.name, args.iteration, root, params)
        elif args.command == "validate":
            from cotflow.runlock import check_stage_allowed
            from tasks.validate import run as run_validate

            check_stage_allowed(root)
            run_validate(root)
            print("params.yaml and what it names are valid")
        elif args.command == "run":
            from flows.pipeline import run_pipeline  # validates params before anything runs

            metrics = run_pipeline(root)
            # DVC's per-stage hint, once: what a commit needs for `dvc exp` to compare.
            print("to keep this run in git (for dvc exp show / metrics diff): git add dvc.lock "
                  "artifacts/*/metrics.json artifacts/*/accuracy.png")
            print("final held-out metrics: " + ", ".join(
                f"{k}={v}" for k, v in metrics.items() if k != "iteration"))
        elif args.command == "deploy":
            from flows.deploy import deploy

            dep = deploy(root, name=args.name, pool=args.pool, cron=args.cron,
                         pool_type=args.pool_type, timezone=args.timezone)
            print(f"deployment cotflow-pipeline/{args.name} ({dep}) on pool {args.pool!r}; "
                  f"run it now: prefect deployment run 'cotflow-pipeline/{args.name}'; "
                  f"serve it: prefect worker start --pool {args.pool}")
        elif args.command == "show":
            from cotflow.show import show

            print(show(args.artifact, limit=args.limit))
        elif args.command == "report":
            from cotflow.report_html import write_report

            print(write_report(root, args.out or root / "report", args.mlflow_ui))
        elif args.command == "eval":
            _evaluate(args, root)
        elif args.command == "preset":
            from cotflow.presets import apply_preset

            names = args.names
            if args.iterations is not None:
                if len(names) != 1 or args.iterations < 1:
                    raise ValueError("--iterations takes one preset name and a count >= 1")
                names = names * args.iterations
            print(apply_preset(params, names), end="")
    except Exception as err:  # noqa: BLE001 - one clear line; COTFLOW_DEBUG=1 for the trace
        from cotflow.stage_errors import leave

        leave(err)  # for the `cotflow run` that started this stage, if one did
        if args.command == "stage" and os.environ.get("DVC_STAGE"):
            # DVC removed this stage's outputs before running it: say how they come back.
            print(f"cotflow: DVC removed the outputs of {os.environ['DVC_STAGE']} before it "
                  "ran; `dvc repro` brings them back (from its run-cache where the stage's "
                  "inputs are as before)", file=sys.stderr)
        if os.environ.get("COTFLOW_DEBUG"):
            raise
        print(f"cotflow: error: {err}", file=sys.stderr)
        return 2
    return 0


def _evaluate(args: argparse.Namespace, root: Path) -> None:
    from cotflow.records import write_json
    from models.eval_command import EvalRequest, parse_columns, run_eval, summary

    req = EvalRequest(model=args.model, source=args.source, split=args.split, n=args.n,
                      k=args.k, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                      fmt=args.fmt, seed=args.seed, columns=parse_columns(args.columns),
                      answer_format=args.answer_format)
    report, cfg = run_eval(req, root)
    write_json(args.out, report)
    print(summary(report))
    print(f"wrote {args.out}")
    if args.mlflow:
        from cotflow.tracking import log_eval, tracking_uri

        run_id = log_eval(cfg, root, report, args.out)
        print(f"MLflow run {run_id} in {tracking_uri(cfg, root)} "
              f"(experiment {cfg.tracking.experiment!r})")


if __name__ == "__main__":
    sys.exit(main())

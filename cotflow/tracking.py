"""MLflow: one parent run per pipeline run, one child run per iteration (and a run of its
own per `cotflow eval --mlflow`, tagged cotflow.kind = eval: log_eval).

The parent is the run that `cotflow run` opened (COTFLOW_PARENT_RUN_ID) when it first had
something to log: a run that reproduces nothing leaves none. Its name says whose run it is
and what it runs (parent_name). Under a plain `dvc repro` there is no such run, so the parent is the
one of this workspace and params.yaml content (tag cotflow.pipeline_key), made on first use:
a changed parameter starts a new parent, a resumed run continues the old one.
The parent logs params.yaml as written (the shared settings, overrides unapplied); each child
logs the settings its iteration ran with, under the same dotted names. Metrics carry
step = iteration (0 = warm start), under the names of cotflow/run_metrics.py.

Who logs: under `cotflow run` the flow logs each stage of TRACKED_STAGES after DVC ran it,
in its own process, where MLflow is loaded once (a stage process would spend seconds
importing it; COTFLOW_FLOW_LOGS tells them); under a plain `dvc repro` the stage logs
itself. `log_stage` serves both.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from itertools import groupby
from pathlib import Path

from cotflow.config import PipelineConfig, flatten
from cotflow.layout import BASE_STAGES, IterationLayout, Layout, stats_file
from cotflow.records import read_json
from cotflow.run_metrics import collect_base, collect_iteration, for_parent

PARENT_ENV = "COTFLOW_PARENT_RUN_ID"
# Set by the flow for its whole run, before its parent exists (made on the first logging):
# the stages DVC starts for it then leave MLflow to it.
FLOW_ENV = "COTFLOW_FLOW_LOGS"
MAX_RUN_NAME = 250  # MLflow's limit on a run name
EXPERIMENT_KIND = "mlflow.experimentKind"
DVC_EXP_ENV = "DVC_EXP_NAME"  # what `dvc exp run` names the experiment its stages run for
# The stages after which there is something to log: the warm start (all base stages) once
# its evaluation is written, an iteration once its evaluate is.
TRACKED_STAGES = frozenset({"baseline", "evaluate"})
SUPERSEDED = "cotflow.superseded_by"
MAX_PARAM_VALUE = 6000  # MLflow refuses longer param values
# Not logged per iteration: `iterations` is the pipeline's shape, not a setting of one
# iteration (the child's `algorithm` names its entry); serving, store and tracking say where
# things run and are recorded, not what is computed (DVC tracks none of them), so they
# cannot explain a difference between iterations. `algorithms` is logged for the
# iteration's own entry only.
CHILD_SKIPS = frozenset({"iterations", "serving", "store", "tracking", "algorithms"})


def tracking_uri(cfg: PipelineConfig, root: Path) -> str:
    return cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{Path(root).resolve() / 'mlflow.db'}")


_NAME_UNSAFE = re.compile(r"[^\w\-. :/]")


def mlflow_key(key: str) -> str:
    """MLflow names allow alphanumerics and _-. :/ only: `algorithms.raft++.clip_eps`
    is logged as `algorithms.raft_plus_plus.clip_eps`."""
    return _NAME_UNSAFE.sub(lambda m: "_plus" if m.group() == "+" else "_", key)


def open_store(cfg: PipelineConfig, root: Path) -> None:
    """Import MLflow and open the store now (the first use of a store creates its database
    and the experiment: seconds), so the pipeline's first logging does not wait for it."""
    _client(cfg, root)


def _client(cfg: PipelineConfig, root: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg, root)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    if exp is None:
        # Artifacts beside the store, not in whatever directory happened to be current.
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        # The kind tag makes MLflow 3's UI open the experiment on its runs table (model
        # training) rather than on its GenAI traces overview, which stays empty here.
        exp_id = client.create_experiment(cfg.tracking.experiment, artifact_location=location,
                                          tags={EXPERIMENT_KIND: "custom_model_development"})
    else:
        exp_id = exp.experiment_id
    return client, exp_id


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pipeline_key(root: Path) -> str:
    params = (Path(root) / "params.yaml").read_bytes()
    return hashlib.sha256(str(Path(root).resolve()).encode() + b"\0" + params).hexdigest()[:16]


def parent_name(cfg: PipelineConfig, root: Path, label: str | None = None) -> str:
    """`LABEL: ALGORITHMS`: who ran it (a deployment's name, else the workspace folder's,
    with the experiment's name under `dvc exp run`) and the iterations' algorithms in order,
    repeats compacted: `micro: raft, grpo x3`, `micro [flaky-agma]: raft, raft++`."""
    algorithms = [cfg.iterations[k].algorithm for k in cfg.iteration_keys()]
    parts = [a if n == 1 else f"{a} x{n}"
             for a, n in ((a, len(list(g))) for a, g in groupby(algorithms))]
    label = label or Path(root).resolve().name
    if os.environ.get(DVC_EXP_ENV):
        label += f" [{os.environ[DVC_EXP_ENV]}]"
    return f"{label}: {', '.join(parts)}"[:MAX_RUN_NAME]


def start_parent(cfg: PipelineConfig, root: Path, *, label: str | None = None) -> str:
    """Create a parent run with the flattened params and provenance tags; return its id.
    `label` names who runs it (parent_name)."""
    client, exp_id = _client(cfg, root)
    tags = {"cotflow.pipeline_key": pipeline_key(root), "cotflow.kind": "pipeline",
            "mlflow.source.git.commit": git_commit(root), "cotflow.workspace": str(root)}
    if os.environ.get(DVC_EXP_ENV):
        tags["cotflow.dvc_experiment"] = os.environ[DVC_EXP_ENV]
    run = client.create_run(exp_id, run_name=parent_name(cfg, root, label), tags=tags)
    _log_params(client, run.info.run_id, _param_names(flatten(cfg)))
    return run.info.run_id


def _param_names(flat: dict[str, str]) -> dict[str, str]:
    return {mlflow_key(k): v[:MAX_PARAM_VALUE] for k, v in flat.items()}


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = sorted(params.items())
    for i in range(0, len(items), 100):  # log_batch takes at most 100 params
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + 100]])


def iteration_params(cfg: PipelineConfig, key: str) -> dict[str, str]:
    """The MLflow params of iteration `key`'s child run: every setting of `cfg` (its resolved
    config, `base.for_iteration(key)`) under params.yaml's dotted names, `algorithm` and
    `kind`, and `algorithms.<name>.<setting>` of its own algorithm entry."""
    name = cfg.iterations[key].algorithm
    entry = cfg.algorithms[name]
    flat = {k: v for k, v in flatten(cfg).items() if k.split(".")[0] not in CHILD_SKIPS}
    flat |= {f"algorithms.{name}.{k}": v for k, v in flatten(entry).items()}
    flat |= {"algorithm": name, "kind": entry.kind}
    return _param_names(flat)


def resolve_parent(cfg: PipelineConfig, root: Path, client, exp_id: str) -> str:
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV]
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`cotflow.pipeline_key` = '{pipeline_key(root)}'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else start_parent(cfg, root)


def dvc_stage_hashes(root: Path, key: str) -> dict[str, str]:
    """Short hashes of this iteration's stage entries in dvc.lock (what DVC recorded)."""
    import yaml

    lock_path = Path(root) / "dvc.lock"
    if not lock_path.is_file():
        return {}
    # libyaml where PyYAML has it: dvc.lock runs to thousands of lines (pure Python: ~1 s).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    stages = (yaml.load(lock_path.read_text(), Loader=loader) or {}).get("stages", {})
    out = {}
    for name, entry in stages.items():
        if name in BASE_STAGES or name.endswith(f"@{key}"):
            blob = json.dumps(entry, sort_keys=True).encode()
            out["dvc/" + name.replace("@", "/")] = hashlib.md5(blob).hexdigest()
    return out


def logged_by_flow() -> bool:
    """Whether a `cotflow run` flow started this stage and logs it itself."""
    return bool(os.environ.get(FLOW_ENV))


def log_stage(cfg: PipelineConfig, layout: Layout, key: str | None, *,
              base: PipelineConfig) -> None:
    """Log what stage baseline (`key` None) or iteration `key`'s evaluate left: `cfg` is the
    config the stage ran with, `base` the one params.yaml states (tasks/common.py
    stage_config gives both)."""
    if key is None:
        log_warm_start(cfg, layout)
    else:
        log_iteration(cfg, layout, layout.iteration(key, base.iterations[key].prev), base=base)


def log_warm_start(cfg: PipelineConfig, layout: Layout) -> None:
    """On the parent at step 0: the warm start's held-out metrics and the base stages'
    stats and timing (it has no child run of its own)."""
    client, exp_id = _client(cfg, layout.root)
    parent = resolve_parent(cfg, layout.root, client, exp_id)
    client.log_batch(parent, metrics=_metric_list(collect_base(layout), step=0))
    client.log_artifact(parent, str(layout.base_metrics))
    _close_if_own(client, parent)


def _close_if_own(client, parent: str) -> None:
    # A parent made for a plain `dvc repro` has no flow to close it; `cotflow run` closes its own.
    if not os.environ.get(PARENT_ENV):
        client.set_terminated(parent)


def _metric_list(values: dict[str, float], step: int):
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in sorted(values.items())]


def _log_train_steps(client, run_id: str, it: IterationLayout) -> None:
    """The train stage's per-step metrics as `train_step/NAME` histories over its steps."""
    if not it.train_steps.is_file():
        return
    metrics = [m for row in read_json(it.train_steps) for m in _metric_list(
        {f"train_step/{k}": float(v) for k, v in row.items() if k != "step"}, int(row["step"]))]
    for i in range(0, len(metrics), 500):
        client.log_batch(run_id, metrics=metrics[i:i + 500])


def _log_budget(client, run_id: str, it: IterationLayout) -> None:
    """GVM's per-prompt p_i, G_i, n_i: their histograms (PNG) and the table itself."""
    import tempfile

    from cotflow.records import read_table

    if not it.budget.is_file():
        return
    budget = read_table(it.budget, "budget")
    if not budget["prompt_id"]:
        return  # uniform allocation: nothing behind it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3), dpi=100)
    for ax, key, label in zip(axes, ("p", "G", "n"), ("acceptance rate p_i",
                              "gradient norm G_i", "samples n_i"), strict=True):
        ax.hist(budget[key], bins=min(30, max(5, len(budget[key]) // 4)))
        ax.set_xlabel(label)
        ax.set_ylabel("prompts")
    fig.suptitle(f"iteration {it.key}: GVM budget over {len(budget['p'])} prompts")
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "budget_histograms.png"
        fig.savefig(path, format="png")
        client.log_artifact(run_id, str(path), "allocation")
    plt.close(fig)
    client.log_artifact(run_id, str(it.budget), "allocation")


def _log_critiques(client, run_id: str, it: IterationLayout) -> None:
    """Critique-GRPO's critiques and refinements table, and its critique type as a tag
    (its rates are the critique stage's stats, logged as metrics with the others)."""
    stats = stats_file(it.dir, "critique")
    kind = read_json(stats).get("critique_type") if stats.is_file() else None
    if kind is None or not it.critiques.is_file():
        return  # an algorithm without critiques
    client.set_tag(run_id, "cotflow.critique_type", str(kind))
    client.log_artifact(run_id, str(it.critiques), "critique")


def _log_skip_ratio(client, run_ids: tuple[str, ...], layout: Layout, base: PipelineConfig,
                    it: IterationLayout) -> None:
    """TON's format: the skip ratio per level from the warm start to this iteration (PNG)."""
    import tempfile

    from cotflow.plots import draw_skip_ratio, skip_levels

    keys = list(base.iterations)[:list(base.iterations).index(it.key) + 1]
    points = [read_json(p) for p in [layout.base_metrics,
                                     *(layout.iteration(k, base.iterations[k].prev).metrics
                                       for k in keys)] if p.is_file()]
    levels = skip_levels(points[-1])
    if not levels:
        return  # not TON's format
    curves = {d: [(m.get(f"skip_ratio_difficulty_{d}", float("nan")), 0.0) for m in points]
              for d in levels}
    with tempfile.TemporaryDirectory() as tmp:
        path = draw_skip_ratio({f"skip ratio, up to iteration {it.key}": curves},
                               Path(tmp) / "skip_ratio.png")
        for run_id in run_ids:
            client.log_artifact(run_id, str(path))


def _changed(logged: dict[str, str], params: dict[str, str]) -> bool:
    """Whether a run that logged `logged` cannot take `params`: a value differs, or it shows
    a setting this run no longer has. Missing ones are fine: they are simply logged."""
    return any(logged.get(k, v) != v for k, v in params.items()) or bool(
        logged.keys() - params.keys())


def _iteration_child(client, exp_id: str, parent: str, key: str,
                     params: dict[str, str], tags: dict[str, str]) -> str:
    """The child run of iteration `key` under `parent` that can hold `params`: the current
    one when its settings agree (a rerun updates its child), else a new one.

    MLflow params are immutable, and a child's metrics must sit beside the settings that
    produced them: so a changed setting starts a new child, and the old one, with its own
    settings and metrics, is kept and tagged `cotflow.superseded_by` the new one's id.
    """
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and "
        f"tags.`cotflow.iteration` = '{key}'", order_by=["attributes.start_time DESC"])
    current = next((r for r in found if SUPERSEDED not in r.data.tags), None)
    if current is not None and not _changed(current.data.params, params):
        run_id = current.info.run_id
        for name, value in tags.items():
            client.set_tag(run_id, name, value)
        params = {k: v for k, v in params.items() if k not in current.data.params}
    elif current is None:
        run_id = client.create_run(exp_id, run_name=f"iter-{key}", tags=tags).info.run_id
    else:
        old = current.info.run_id
        run_id = client.create_run(exp_id, run_name=f"iter-{key}",
                                   tags={**tags, "cotflow.supersedes": old}).info.run_id
        client.set_tag(old, SUPERSEDED, run_id)
    _log_params(client, run_id, params)
    return run_id


def log_iteration(cfg: PipelineConfig, layout: Layout, it: IterationLayout, *,
                  base: PipelineConfig) -> str:
    """Log iteration `it` as a child run of the pipeline's parent; return the child's id.

    `cfg` is the iteration's resolved config (what its stages ran with: the child logs it),
    `base` the one params.yaml states (a parent made here logs that).
    """
    client, exp_id = _client(base, layout.root)  # where the parent is, whatever overrides say
    parent = resolve_parent(base, layout.root, client, exp_id)
    step = int(it.key)
    tags = {"mlflow.parentRunId": parent, "cotflow.iteration": it.key,
            "cotflow.algorithm": cfg.iterations[it.key].algorithm,
            "mlflow.source.git.commit": git_commit(layout.root),
            **dvc_stage_hashes(layout.root, it.key)}
    run_id = _iteration_child(client, exp_id, parent, it.key, iteration_params(cfg, it.key),
                              tags)
    metrics = collect_iteration(it)
    for i in range(0, len(metrics), 500):
        chunk = dict(list(metrics.items())[i:i + 500])
        client.log_batch(run_id, metrics=_metric_list(chunk, step))
    client.log_artifact(run_id, str(it.metrics))
    client.log_artifact(run_id, str(it.plot))
    _log_budget(client, run_id, it)
    _log_critiques(client, run_id, it)
    _log_train_steps(client, run_id, it)
    _log_skip_ratio(client, (run_id, parent), layout, base, it)
    client.log_batch(parent, metrics=_metric_list(for_parent(metrics), step))
    client.log_artifact(parent, str(it.plot))
    client.set_terminated(run_id)
    _close_if_own(client, parent)
    return run_id


def log_eval(cfg: PipelineConfig, root: Path, report: dict, path: Path) -> str:
    """A run of `cotflow eval` in the workspace's store, outside any pipeline run: its
    settings as params, its metrics under the pipeline's names (`eval/...`, `evaluate/...`)
    and its timing as `timing/eval/...`; the JSON it wrote (`path`) as an artifact. Returns
    the run's id."""
    from cotflow.run_metrics import evaluation, numeric

    client, exp_id = _client(cfg, root)
    settings = report["settings"]
    tags = {"cotflow.kind": "eval", "cotflow.model": str(settings["model"]),
            "mlflow.source.git.commit": git_commit(root), "cotflow.workspace": str(root)}
    name = f"eval: {settings['model']} on {settings['source']} {settings['split']}"
    run_id = client.create_run(exp_id, run_name=name[:MAX_RUN_NAME], tags=tags).info.run_id
    _log_params(client, run_id, _param_names({k: str(v) for k, v in settings.items()}))
    metrics = evaluation(report["metrics"]) | numeric("timing/eval", report["timing"])
    items = list(metrics.items())
    for i in range(0, len(items), 500):  # log_batch takes at most 1000 entries
        client.log_batch(run_id, metrics=_metric_list(dict(items[i:i + 500]), step=0))
    client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return run_id

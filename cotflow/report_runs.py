"""`cotflow report`, its links: each iteration's MLflow run in the workspace's store.

The runs of this workspace are the children (tag `cotflow.iteration`) of its pipeline
parents (tag `cotflow.kind = pipeline`, cotflow/tracking.py): first the parents of params.yaml
as it is now (`cotflow.pipeline_key`), newest first, then older ones of the same workspace
folder (`cotflow.workspace`: params edited since, e.g. an iteration added), so that an
iteration finished before an edit keeps its link. A child counts when it runs the algorithm
params.yaml names for it and no later child superseded it. The warm start has no child: it
links to the newest parent, which logs its metrics at step 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cotflow.config import PipelineConfig
from cotflow.tracking import SUPERSEDED, pipeline_key, tracking_uri


@dataclass(frozen=True)
class RunLinks:
    note: str  # where runs were looked for and what was found, said on the page
    urls: dict[str, str] = field(default_factory=dict)  # folder -> its run's UI URL


def run_url(ui: str, experiment_id: str, run_id: str) -> str:
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def find_runs(cfg: PipelineConfig, root: Path, ui: str) -> RunLinks:
    """The UI URL of each folder's run (`base`, `iter-NNN`); without a store or a run, a
    note that says so (never an error: the page is useful without links)."""
    root = Path(root).resolve()
    uri = tracking_uri(cfg, root)
    db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if db is not None and not db.is_file():
        # Opening a missing sqlite store would create it: say there is none instead.
        off = "" if cfg.tracking.enabled else " (tracking.enabled is false)"
        return RunLinks(f"no MLflow store: {db} does not exist{off}")
    # A remote store that is down: one short try, not MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        return _lookup(cfg, root, uri, ui)
    except Exception as err:  # noqa: BLE001 - a report without links beats no report
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return RunLinks(f"MLflow store {uri} could not be read: {type(err).__name__}: {first}")


def _lookup(cfg: PipelineConfig, root: Path, uri: str, ui: str) -> RunLinks:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    name = cfg.tracking.experiment
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return RunLinks(f"MLflow store {uri} has no experiment {name!r}")
    exp_id = exp.experiment_id
    newest = ["attributes.start_time DESC"]
    parents = client.search_runs([exp_id], "tags.`cotflow.kind` = 'pipeline'", order_by=newest)
    key = pipeline_key(root)
    ours = ([p for p in parents if p.data.tags.get("cotflow.pipeline_key") == key]
            + [p for p in parents if p.data.tags.get("cotflow.pipeline_key") != key
               and p.data.tags.get("cotflow.workspace") == str(root)])
    where = f"MLflow store {uri}, experiment {name!r}"
    if not ours:
        return RunLinks(f"{where}: no pipeline run of this workspace ({root})")
    algorithms = {f"iter-{k}": cfg.iterations[k].algorithm for k in cfg.iteration_keys()}
    urls = {"base": run_url(ui, exp_id, ours[0].info.run_id)}
    for parent in ours:
        children = client.search_runs(
            [exp_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", order_by=newest)
        for child in children:
            tags = child.data.tags
            folder = f"iter-{tags.get('cotflow.iteration')}"
            if (folder not in urls and SUPERSEDED not in tags
                    and tags.get("cotflow.algorithm") == algorithms.get(folder)):
                urls[folder] = run_url(ui, exp_id, child.info.run_id)
    return RunLinks(f"{where}; UI at {ui} (`mlflow ui --backend-store-uri {uri}`)", urls)

"""The pipeline as a Prefect flow: one task per DVC stage, in DVC's order.

Each task asks DVC to reproduce exactly its stage (`Repo.reproduce(single_item=True)`, what
`dvc repro --single-item` does), so DVC alone decides what is stale and writes dvc.lock: a
flow run and `dvc repro` are interchangeable and either resumes what the other left
(specs/prefect-dvc.md, approach A). Prefect adds retries (not of a failure that will recur:
cotflow/stage_errors.py), per-stage logs (each stage's log file, forwarded, its traceback
left there) and the UI; it caches nothing of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from cotflow.config import PipelineConfig
from cotflow.layout import BASE_STAGES, STAGES, Layout, log_file
from cotflow.log_tail import LogTail
from cotflow.records import read_json
from cotflow.stage_errors import stage_failure, trace_header
from cotflow.stage_server import stage_server
from flows.dvc_lock import read_lock_safely
from tasks.validate import validate


def stage_order(cfg: PipelineConfig) -> list[str]:
    """DVC stage names in execution order: validate, the base stages (model, data,
    warmstart, baseline), then each iteration's seven stages. Each is reproduced alone
    (single_item), so validate must come first here too."""
    return ["validate", *BASE_STAGES] + [
        f"{s}@{k}" for k in cfg.iteration_keys() for s in STAGES]


def stage_log(root: Path, stage: str) -> Path:
    """The log DVC stage `validate`, a base stage (`data`...) or `NAME@KEY` writes when it
    runs."""
    layout = Layout(root)
    name, _, key = stage.partition("@")
    if name == "validate":
        return layout.validate_log
    return log_file(layout.base if name in BASE_STAGES else layout.folder(f"iter-{key}"), name)


def _may_pass_on_retry(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: no retry for a failure that will recur (bad input).
    Prefect hands the exception the task raised as the Failed state's data."""
    return not getattr(state.data, "recurs", False)


@task(name="dvc-stage", task_run_name="{stage}", retries=1, retry_delay_seconds=5,
      retry_condition_fn=_may_pass_on_retry)
def reproduce_stage(root: str, stage: str) -> bool:
    """Ask DVC to reproduce exactly `stage`; return whether it ran (False: up to date)."""
    from dvc.repo import Repo

    logger = get_run_logger()
    log_path = stage_log(Path(root), stage)
    os.chdir(root)  # DVC resolves stage names against the working directory
    # The stage's log reaches Prefect line by line while it runs, not after it ends.
    with LogTail(log_path, _forwarder(_to_api_only(logger).info, stage, log_path)) as tail:
        # In-process: the same code path as `dvc repro --single-item`, without a CLI start
        # (about 1 s) per stage. DVC still runs the stage's cmd as a subprocess.
        with stage_failure(stage), Repo(root) as repo:
            repo.scm_context.quiet = True  # its "git add dvc.lock" hint: once, at the end
            repo.reproduce(stage, single_item=True)
    ran = tail.started
    if not ran:
        logger.info("%s is up to date (DVC skipped it)", stage)
        _mark_stale_failure(log_path, stage)
    return ran


def _mark_stale_failure(log_path: Path, stage: str) -> None:
    """A stage that failed, then came back from DVC's run-cache without running, keeps the
    failed attempt's log: say so at its end, so its traceback is not read as today's."""
    note = "the failure above is of an earlier attempt\n"
    text = log_path.read_text(errors="replace") if log_path.is_file() else ""
    if trace_header(stage.split("@")[0]) in text and not text.endswith(note):
        from datetime import datetime

        with log_path.open("a") as f:
            f.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} {stage} is up to date now (its "
                    f"outputs restored by DVC): {note}")


def _to_api_only(run_logger: Any) -> Any:
    """The task run's logger, less the console: the stage's own output reaches the console
    already (DVC passes it through), so its forwarded log lines go to Prefect's API alone."""
    import logging

    from prefect.logging.handlers import APILogHandler

    base = logging.getLogger("prefect.task_runs.stage_log")
    base.propagate = False
    if not any(isinstance(h, APILogHandler) for h in base.handlers):
        base.addHandler(APILogHandler())
    base.setLevel(logging.INFO)
    return type(run_logger)(base, run_logger.extra)


def _dvc_prints_once() -> None:
    """DVC prints through its own handlers (as `dvc repro` does); its records also reached
    Prefect's console handler on the root logger, so every DVC line came out twice."""
    import logging

    for name in ("dvc", "dvc_objects", "dvc_data"):
        logging.getLogger(name).propagate = False


def _forwarder(emit: Callable[[str], None], stage: str,
               log_path: Path) -> Callable[[str], None]:
    """`emit` each line of the stage's log but its traceback, which stays in the file: the
    failure says what it was."""
    header = trace_header(stage.split("@")[0])
    hidden = False

    def forward(line: str) -> None:
        nonlocal hidden
        if hidden:
            return
        if line == header:
            hidden = True
            line = f"{header} trace in {log_path}"
        emit(line)
    return forward


@task(name="mlflow", task_run_name="log {stage}", retries=2, retry_delay_seconds=10)
def track_stage(root: str, stage: str) -> None:
    """Log to MLflow what `stage` (baseline or evaluate@KEY) left, as the stage itself does
    under a plain `dvc repro`: here in the flow's process, which loads MLflow once."""
    from cotflow.tracking import log_stage
    from tasks.common import stage_config

    name, _, key = stage.partition("@")
    base, cfg, key = stage_config(name, key or None, Path(root) / "params.yaml")
    log_stage(cfg, Layout(Path(root)), key, base=base)


@task(name="dvc-push", task_run_name="push {label}", retries=2, retry_delay_seconds=30)
def push_artifacts(root: str, url: str, label: str) -> int:
    """Push what DVC has cached so far to the shared remote (store.dvc_remote)."""
    from cotflow.store import push

    pushed = push(Path(root), url)
    get_run_logger().info("pushed %d files to %s after %s", pushed, url, label)
    return pushed


@flow(name="cotflow-pipeline")
def pipeline(root: str) -> dict[str, Any]:
    """Run (or resume) every stage; return the last iteration's held-out metrics."""
    from cotflow.env import apply_defaults
    from cotflow.tracking import FLOW_ENV, PARENT_ENV, TRACKED_STAGES, start_parent

    root_path = Path(root)
    apply_defaults(root_path)  # a deployment's run starts here, not in the CLI
    _dvc_prints_once()  # process-wide: before the first stage's DVC call
    read_lock_safely()
    cfg = validate(root_path)  # a deployment's run: refused before its MLflow run starts
    if cfg.tracking.enabled:
        os.environ[FLOW_ENV] = "1"  # the stages DVC starts leave MLflow to this flow
    parent = None  # made when there is something to log: a no-op run leaves no MLflow run
    status = "FAILED"
    try:
        with stage_server(root_path):  # no-op under `cotflow run`, which started one
            for stage in stage_order(cfg):
                ran = reproduce_stage(root, stage)
                if cfg.tracking.enabled and ran and stage.split("@")[0] in TRACKED_STAGES:
                    if parent is None:
                        parent = start_parent(cfg, root_path, label=_deployment_name())
                        os.environ[PARENT_ENV] = parent  # the child runs hang under it
                    track_stage(root, stage)
                if cfg.store.dvc_remote and stage.startswith("evaluate@"):
                    push_artifacts(root, cfg.store.dvc_remote, f"iteration {stage[9:]}")
        status = "FINISHED"
    finally:
        os.environ.pop(FLOW_ENV, None)
        if parent:
            os.environ.pop(PARENT_ENV, None)
            _close(cfg, root_path, parent, status)
    last = cfg.iteration_keys()[-1]
    return read_json(Layout(root_path).iteration(last, cfg.iterations[last].prev).metrics)


def _deployment_name() -> str | None:
    """The deployment this flow run belongs to (None under `cotflow run`)."""
    from prefect.runtime import deployment

    return deployment.name


def _close(cfg: PipelineConfig, root: Path, run_id: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    from cotflow.tracking import tracking_uri

    MlflowClient(tracking_uri(cfg, root)).set_terminated(run_id, status=status)


def run_pipeline(root: Path) -> dict[str, Any]:
    from cotflow.runlock import check_dvc_idle, run_lock

    cfg = validate(root)  # refuse bad input before anything starts
    if not os.environ.get("COTFLOW_DEBUG"):
        from flows.console import quiet_tracebacks

        quiet_tracebacks()  # the run ends in one line naming the cause (cli.py)
    if not (root / "dvc.yaml").is_file():
        raise ValueError(f"{root}: no dvc.yaml (run cotflow from the workspace root)")
    with run_lock(root):  # one run per workspace, for the whole run (cotflow/runlock.py)
        check_dvc_idle(root)
        # Three starts of seconds each, side by side: Prefect's temporary server (first: the
        # longest, and its start imports much here), the stage server's imports, MLflow's
        # store (here, while the other two run).
        with _prefect_server() as prefect_ready, stage_server(root):
            if cfg.tracking.enabled:
                from cotflow.tracking import open_store

                open_store(cfg, root)
            prefect_ready()
            try:
                return pipeline(str(root))
            finally:
                _send_queued_logs()


def _send_queued_logs() -> None:
    """Send the log records still queued for Prefect's API before its temporary server
    stops: one sent after it ended as "Error logging to API" below the run's last line."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)


@contextmanager
def _prefect_server() -> Iterator[Callable[[], None]]:
    """Start the temporary server that the flow's first call would start, without waiting
    for it; yield the wait. It is Prefect's own (the same instance, which the flow then
    finds running); none where PREFECT_API_URL names a server or ephemeral mode is off.
    Stopped when the block ends rather than at exit, so that its goodbye comes before the
    run's last line (on failure: the cause)."""
    import threading

    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        yield lambda: None
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    # A failed start leaves it not running: the flow's own call then starts it and raises.
    starting = threading.Thread(target=server.start, name="prefect-server", daemon=True)
    starting.start()
    try:
        yield starting.join
    finally:
        starting.join()
        server.stop()

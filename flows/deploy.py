"""`cotflow deploy`: the pipeline flow as a Prefect deployment with a cron schedule.

The deployment runs `flows/pipeline.py:pipeline` from the workspace folder on whatever
worker polls the work pool, with `root` set to that folder. Every run asks DVC what is
stale, so a nightly run adds the iterations params.yaml gained since the last one, or
resumes one that failed, rather than starting over. One run at a time per deployment:
two runs on one workspace would contend for DVC's locks.
"""

from __future__ import annotations

from pathlib import Path

ENTRYPOINT = "flows/pipeline.py:pipeline"


def ensure_work_pool(name: str, pool_type: str) -> str:
    """Create work pool `name` of `pool_type` unless it exists; return its type."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            if pool_type != "process":
                raise ValueError(
                    f"work pool {name!r} does not exist; create a {pool_type} pool first, e.g. "
                    f"`prefect work-pool create {name} --type {pool_type}` (README, Scaling out)"
                ) from None
            from prefect.workers.process import ProcessWorker

            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=name, type="process",
                                                   base_job_template=template))
            return "process"
        return pool.type


def deploy(root: Path, *, name: str, pool: str, cron: str | None, pool_type: str = "process",
           timezone: str = "UTC") -> str:
    """Create or update the deployment; return its id. Needs PREFECT_API_URL (a server that
    the workers reach too: an ephemeral server ends with this process)."""
    import os

    from prefect.schedules import Cron

    from cotflow.config import load_params
    from flows.pipeline import pipeline

    root = Path(root).resolve()
    load_params(root / "params.yaml")  # refuse to schedule what cannot run
    if not (root / "dvc.yaml").is_file():
        raise ValueError(f"{root}: no dvc.yaml (deploy from the workspace root)")
    if not os.environ.get("PREFECT_API_URL"):
        raise ValueError("PREFECT_API_URL is not set: deploy to the Prefect server your "
                         "workers use, e.g. http://127.0.0.1:4200/api after `prefect server "
                         "start`")
    ensure_work_pool(pool, pool_type)
    schedules = [Cron(cron, timezone=timezone)] if cron else None
    flow = pipeline.from_source(source=str(root), entrypoint=ENTRYPOINT)
    deployment_id = flow.deploy(
        name=name, work_pool_name=pool, schedules=schedules, parameters={"root": str(root)},
        concurrency_limit=1, build=False, push=False, print_next_steps=False,
        description=f"cotflow pipeline of {root}", tags=["cotflow"])
    return str(deployment_id)

"""Scaling out, end to end on loopback: `cotflow deploy` to a real Prefect server, a process
worker runs it, artifacts are pushed to a DVC remote and runs land on an `mlflow server`.
A second run, after params.yaml gained an iteration, continues where the first stopped."""

from __future__ import annotations

import json
import os
import sys
import time

import httpx
import pytest
import yaml

from cotflow.workspace import make_workspace
from models.server import ManagedServer, free_port
from tests.conftest import micro_params
from tests.test_pipeline_e2e import _dvc, _env, _run

pytestmark = pytest.mark.slow
POOL, NAME, CRON = "cotflow-e2e", "nightly", "0 2 * * *"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Prefect server, MLflow server (sqlite), a workspace that uses both and a DVC remote,
    the deployment, and a worker polling its pool. Yields (ws, env, prefect, mlflow, remote)."""
    tmp = tmp_path_factory.mktemp("scale")
    home = tmp / "prefect-home"
    home.mkdir()
    base = _env(home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    prefect_port, mlflow_port, worker_port = free_port(), free_port(), free_port()
    prefect = ManagedServer(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
         str(prefect_port)], host="127.0.0.1", port=prefect_port, startup_timeout_s=180,
        log_path=tmp / "prefect.log", health_path="/api/health", env=base)
    mlflow = ManagedServer(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
         str(mlflow_port), "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
         "--artifacts-destination", str(tmp / "mlartifacts"), "--workers", "1"],
        host="127.0.0.1", port=mlflow_port, startup_timeout_s=180, log_path=tmp / "mlflow.log",
        env={**base, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    # From this thread: the servers get SIGTERM when the thread that started them ends.
    prefect.start()
    mlflow.start()
    prefect_url, mlflow_url = prefect.root + "/api", mlflow.root
    remote = tmp / "dvc-remote"
    params = micro_params(tracking={"enabled": True, "uri": mlflow_url, "experiment": "scale"},
                          store={"dvc_remote": str(remote)})
    params["iterations"] = {"001": params["iterations"]["001"]}
    (tmp / "ws").mkdir()
    ws = make_workspace(tmp / "ws", params)
    env = {**_env(ws, PREFECT_API_URL=prefect_url), "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
           "PREFECT_WORKER_WEBSERVER_PORT": str(worker_port)}
    out = _run([sys.executable, "-m", "cotflow", "deploy", "--name", NAME, "--pool", POOL,
                "--cron", CRON], ws, env, timeout=180)
    assert "deployment cotflow-pipeline/nightly" in out.stdout
    worker = ManagedServer(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type",
         "process", "--with-healthcheck"], host="127.0.0.1", port=worker_port,
        startup_timeout_s=120, log_path=tmp / "worker.log", env=env)
    worker.start()
    try:
        yield ws, env, prefect_url, mlflow_url, remote
    finally:
        worker.stop()  # before the server: a worker without its server ignores SIGTERM
        prefect.stop()
        mlflow.stop()


def _api(method: str, url: str, **kw) -> dict:
    """A Prefect API call that rides out a loaded server: 5xx and timeouts are retried
    (sqlite under a busy CI machine answers 'database is locked'); anything else fails
    with the server's answer."""
    for attempt in range(6):
        try:
            resp = httpx.request(method, url, timeout=60, **kw)
        except httpx.TimeoutException:
            resp = None
        if resp is not None and resp.status_code < 500:
            assert resp.is_success, f"{method} {url}: {resp.status_code} {resp.text}"
            return resp.json()
        time.sleep(2 ** attempt)
    pytest.fail(f"{method} {url}: no answer after retries "
                f"({resp.status_code if resp is not None else 'timeout'})")


def _run_deployment(prefect_url: str, timeout_s: float = 900) -> dict:
    dep = _api("GET", f"{prefect_url}/deployments/name/cotflow-pipeline/{NAME}")
    run = _api("POST", f"{prefect_url}/deployments/{dep['id']}/create_flow_run", json={})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _api("GET", f"{prefect_url}/flow_runs/{run['id']}")["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return state
        time.sleep(2)
    pytest.fail(f"flow run {run['id']} did not finish in {timeout_s} s")


def _mlflow(url: str, path: str, body: dict) -> dict:
    resp = httpx.post(f"{url}/api/2.0/mlflow/{path}", json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _runs(mlflow_url: str, filter_string: str) -> list[dict]:
    exp = httpx.get(f"{mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
                    params={"experiment_name": "scale"}).json()["experiment"]
    return _mlflow(mlflow_url, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                               "filter": filter_string}).get("runs", [])


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_deployment_has_schedule_pool_and_one_run_at_a_time(stack):
    _, _, prefect_url, _, _ = stack
    dep = _api("GET", f"{prefect_url}/deployments/name/cotflow-pipeline/{NAME}")
    assert dep["work_pool_name"] == POOL
    assert [s["schedule"]["cron"] for s in dep["schedules"]] == [CRON]
    assert dep["parameters"]["root"] == str(stack[0])
    assert dep["global_concurrency_limit"]["limit"] == 1


def test_triggered_run_completes_pushes_and_tracks(stack):
    ws, env, prefect_url, mlflow_url, remote = stack
    state = _run_deployment(prefect_url)
    assert state["type"] == "COMPLETED", state
    assert (ws / "artifacts/iter-001/policy/model.safetensors").is_file()
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}
    # Everything DVC tracks is on the remote.
    assert json.loads(_dvc(ws, env, "status", "-c", "-r", "cotflow", "--json").stdout) == {}
    assert any(remote.rglob("*"))
    parents = _runs(mlflow_url, "tags.`cotflow.kind` = 'pipeline'")
    assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
    parent_id = parents[0]["info"]["run_id"]
    assert parents[0]["info"]["run_name"].startswith(f"{NAME}: ")  # the deployment's name
    children = _runs(mlflow_url, f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert [_tags(c)["cotflow.iteration"] for c in children] == ["001"]
    metrics = {m["key"] for m in children[0]["data"]["metrics"]}
    assert {"eval/accuracy", "stats/train/loss", "timing/sample/tokens_per_s"} <= metrics
    history = httpx.get(f"{mlflow_url}/api/2.0/mlflow/metrics/get-history",
                        params={"run_id": parent_id, "metric_key": "eval/accuracy"}).json()
    assert sorted(m["step"] for m in history["metrics"]) == [0, 1]
    arts = httpx.get(f"{mlflow_url}/api/2.0/mlflow/artifacts/list",
                     params={"run_id": children[0]["info"]["run_id"]}).json()
    assert {"metrics.json", "accuracy.png"} <= {f["path"] for f in arts["files"]}


def test_next_run_continues_where_the_last_left(stack):
    ws, env, prefect_url, mlflow_url, _ = stack
    done = [ws / "artifacts/base/policy/model.safetensors",
            ws / "artifacts/iter-001/policy/model.safetensors",
            ws / "artifacts/iter-001/stats/sample.json"]
    before = {p: p.stat().st_mtime_ns for p in done}
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["iterations"]["002"] = {"algorithm": "raft++", "prev": "iter-001"}
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    state = _run_deployment(prefect_url)
    assert state["type"] == "COMPLETED", state
    assert {p: p.stat().st_mtime_ns for p in done} == before  # DVC skipped what was done
    assert (ws / "artifacts/iter-002/metrics.json").is_file()
    assert json.loads(_dvc(ws, env, "status", "-c", "-r", "cotflow", "--json").stdout) == {}
    parents = _runs(mlflow_url, "tags.`cotflow.kind` = 'pipeline'")
    assert len(parents) == 2
    newest = max(parents, key=lambda r: r["info"]["start_time"])["info"]["run_id"]
    children = _runs(mlflow_url, f"tags.`mlflow.parentRunId` = '{newest}'")
    assert [_tags(c)["cotflow.iteration"] for c in children] == ["002"]
    assert os.environ.get("PREFECT_API_URL") != prefect_url  # the test process stayed clean

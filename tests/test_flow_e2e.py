"""The micro pipeline run by Prefect (`cotflow run`) beside DVC, and killed in every stage:
each resumes what the other left, with the same results as one plain `dvc repro`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cotflow.workspace import make_workspace
from tests.conftest import frozen_pid, micro_params
from tests.test_pipeline_e2e import _dvc, _env, _lock_outs, _run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server on loopback, stopped with its whole process group."""
    import socket
    import urllib.request

    home = tmp_path_factory.mktemp("prefect")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env["PREFECT_HOME"] = str(home)
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"prefect server did not start: {(home / 'server.log').read_text()}")
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_cotflow_run_resumes_what_dvc_left_with_identical_results(
        finished_micro, prefect_server, tmp_path_factory):
    ws_ref = finished_micro
    ws = make_workspace(tmp_path_factory.mktemp("flow"), micro_params())
    env = _env(ws, PREFECT_API_URL=prefect_server)
    _dvc(ws, env, "repro", "allocate@001")  # DVC starts the work...
    out = _run([sys.executable, "-m", "cotflow", "run"], ws, env)  # ...Prefect finishes it
    assert "warmstart" in out.stdout + out.stderr
    # DVC's lines once each (its own handler, not Prefect's console too), its git hint once.
    printed = out.stdout + out.stderr
    assert printed.count("Running stage 'train@002'") == 1
    assert printed.count("git add dvc.lock") == 1
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}
    assert _lock_outs(ws) == _lock_outs(ws_ref)  # same outputs, byte for byte
    flow_runs = _api(prefect_server, "/flow_runs/filter", {})
    assert any(r["state_type"] == "COMPLETED" for r in flow_runs)
    tasks = _api(prefect_server, "/task_runs/filter", {})
    assert {t["name"] for t in tasks} >= {"model", "data", "warmstart", "baseline", "train@002",
                                          "evaluate@002", "log evaluate@002"}
    # train@002's log reached its task run (forwarded as written: cotflow/log_tail.py),
    # every line once, its progress lines among them.
    from collections import Counter

    from flows.pipeline import stage_log

    train = next(t["id"] for t in tasks if t["name"] == "train@002")
    logs = _api(prefect_server, "/logs/filter",
                {"logs": {"task_run_id": {"any_": [train]}}, "limit": 200})
    lines = stage_log(ws, "train@002").read_text().splitlines()
    assert any(": step " in line and "ETA" in line for line in lines)
    assert Counter(m for m in (r["message"] for r in logs) if m in set(lines)) == Counter(lines)
    # On the console once: the stage's own output (DVC passes it through), not again as
    # Prefect's record of the forwarded line.
    done = next(line for line in lines if " train done: " in line)
    assert printed.count(done.split(" INFO ", 1)[1]) == 1, done
    # The flow logged the iterations it ran, in its own process: the stages did not.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cotflow").experiment_id])
    parents = {r.info.run_id for r in runs if r.data.tags.get("cotflow.kind") == "pipeline"}
    children = sorted((c.data.tags["cotflow.iteration"], c.data.tags["mlflow.parentRunId"])
                      for c in runs if c.data.tags.get("mlflow.parentRunId") in parents)
    assert [k for k, _ in children] == ["001", "002"] and len({p for _, p in children}) == 1
    for key in ("001", "002"):
        timing = json.loads((ws / f"artifacts/iter-{key}/timing/evaluate.json").read_text())
        assert "tracking_seconds" not in timing
    flow_parent = client.get_run(children[0][1])
    assert flow_parent.info.run_name == f"{ws.name}: raft, raft++"
    assert flow_parent.data.tags["cotflow.kind"] == "pipeline"
    # A run that reproduces nothing leaves no MLflow run.
    _run([sys.executable, "-m", "cotflow", "run"], ws, env)
    again = client.search_runs([client.get_experiment_by_name("cotflow").experiment_id])
    assert {r.info.run_id for r in again} == {r.info.run_id for r in runs}


def _api(url: str, path: str, body: dict) -> list[dict]:
    import urllib.request

    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


# Each `dvc repro` resumes what the previous one left and is SIGKILLed (DVC, the stage and
# its workers: the whole process group) at the named point of the next stage of iteration
# 001; sample@001 is frozen instead, to try second runs beside it. cotflow/faults.py.
KILLS = [
    ("data", "write"),  # a split's temporary complete, not yet renamed
    ("warmstart", "checkpoint"),  # mid warm start, just after its step-50 resume checkpoint
    ("baseline", "done"),  # the warm start's metrics written, its stats file not
    ("allocate@001", "write"),  # an output's temporary complete, not yet renamed
    ("sample@001", "write"),  # frozen, then killed
    ("verify@001", "write"),  # with the verifier pool's workers
    ("critique@001", "done"),  # outputs written, stats file not
    ("judge@001", "start"),
    ("train@001", "checkpoint"),  # after its last step's checkpoint, before the save
    ("evaluate@001", "write"),
]


def _assert_outputs_whole(ws: Path) -> None:
    """Every visible artifact is complete and valid (hidden temporaries may lie beside)."""
    from cotflow.records import SCHEMAS, read_table

    for path in (ws / "artifacts").rglob("*"):
        rel = path.relative_to(ws / "artifacts")
        if any(part.startswith(".") for part in rel.parts) or path.is_dir():
            continue
        if path.suffix == ".parquet":
            read_table(path, path.stem if path.stem in SCHEMAS else "problems")
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            assert path.read_bytes().endswith(b"IEND\xaeB`\x82"), path
        elif path.name == "model.safetensors":
            assert load_file(path)
    for policy in (ws / "artifacts").glob("*/policy"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
            p.name for p in policy.iterdir()}, policy


def test_killed_in_every_stage_then_resumed_gives_identical_results(
        finished_micro, prefect_server, tmp_path_factory):
    ws_ref = finished_micro
    ws = make_workspace(tmp_path_factory.mktemp("kill"), micro_params())
    faults = ws / ".cotflow" / "faults"
    env = _env(ws, COTFLOW_FAULT_DIR=str(faults))
    for stage, point in KILLS:
        action = "stop" if stage == "sample@001" else "kill"
        run_env = {**env, "COTFLOW_FAULT": f"{stage}:{point}:{action}"}
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=ws, env=run_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        if action == "stop":
            frozen_pid(faults / f"{stage}.{point}")
            lock_before = (ws / "dvc.lock").read_text()
            second = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=ws, env=env,
                                    capture_output=True, text=True, timeout=120)
            # DVC lets go of its repo lock while a stage runs and refuses on the stage's
            # read/write locks instead.
            assert second.returncode != 0 and "is busy, it is being blocked by" in second.stderr
            plain = {k: v for k, v in env.items() if k != "COTFLOW_DEBUG"}  # no traceback
            flow = subprocess.run([sys.executable, "-m", "cotflow", "run"], cwd=ws, env=plain,
                                  capture_output=True, text=True, timeout=120)
            assert flow.returncode == 2 and "Traceback" not in flow.stderr
            assert "a DVC command is running in this workspace (pid " in flow.stderr
            assert (ws / "dvc.lock").read_text() == lock_before
            os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=600) == -signal.SIGKILL, f"{stage}:{point} did not fire"
        assert (faults / f"{stage}.{point}").is_file()
        _assert_outputs_whole(ws)
        lock = _lock_outs(ws) if (ws / "dvc.lock").is_file() else {}
        assert stage not in lock, f"{stage} was recorded although it was killed"

    # The rest through Prefect. evaluate@002 (the last stage, so surely the flow's: DVC may
    # have run some of iteration 002 before evaluate@001) fails once after writing its
    # outputs and is retried by the flow: its curve gains no duplicate rows.
    flow_env = {**env, "PREFECT_API_URL": prefect_server,
                "COTFLOW_FAULT": "evaluate@002:done:fail"}
    _run([sys.executable, "-m", "cotflow", "run"], ws, flow_env)
    assert (faults / "evaluate@002.done").is_file()
    retried = [t for t in _api(prefect_server, "/task_runs/filter", {})
               if t["name"] == "evaluate@002" and t["run_count"] == 2]
    assert retried and retried[0]["state_type"] == "COMPLETED"
    curve = json.loads((ws / "artifacts/iter-002/curve.json").read_text())
    assert [p["iteration"] for p in curve] == [0, 1, 2]
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}
    assert _lock_outs(ws) == _lock_outs(ws_ref)
    leftovers = [p for p in (ws / "artifacts").rglob(".*") if p.name != ".gitignore"]
    assert not leftovers  # temporaries swept, checkpoints removed

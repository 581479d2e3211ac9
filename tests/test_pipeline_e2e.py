"""The two-iteration micro pipeline end to end through real DVC, Prefect and MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from cotflow.workspace import make_workspace
from tests.conftest import frozen_pid, micro_params

pytestmark = pytest.mark.slow
STAGES = ["prepare"] + [f"{s}@{k}" for k in ("001", "002") for s in
                        ("allocate", "sample", "verify", "critique", "judge", "train", "evaluate")]


def _env(ws: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_API", "MLFLOW_TRACKING_URI", "COTFLOW_"))}
    env.update(PREFECT_HOME=str(ws / ".prefect"), COTFLOW_DEBUG="1", **extra)
    return env


def _run(args: list[str], ws: Path, env: dict[str, str], timeout: int = 900):
    r = subprocess.run(args, cwd=ws, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{args} failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def _dvc(ws: Path, env: dict[str, str], *args: str):
    return _run([sys.executable, "-m", "dvc", *args], ws, env)


def _lock_outs(ws: Path) -> dict[str, list]:
    """Each stage's outputs and their hashes, as dvc.lock records them."""
    stages = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    return {name: sorted((o["path"], o.get("md5")) for o in entry.get("outs", []))
            for name, entry in stages.items()}


@pytest.fixture(scope="module")
def repro_ws(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    ws = make_workspace(tmp_path_factory.mktemp("repro"), micro_params())
    env = _env(ws)
    _dvc(ws, env, "repro")
    return ws, env


def test_lock_and_status_after_repro(repro_ws):
    ws, env = repro_ws
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]
    assert sorted(lock) == sorted(STAGES)
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}


def test_second_repro_does_nothing(repro_ws):
    ws, env = repro_ws
    before = (ws / "dvc.lock").read_text()
    out = _dvc(ws, env, "repro").stdout
    assert "Running stage" not in out
    assert (ws / "dvc.lock").read_text() == before


def test_train_param_change_reruns_train_and_what_follows_only(repro_ws):
    ws, env = repro_ws
    params = (ws / "params.yaml").read_text()
    raw = yaml.safe_load(params)
    raw["train"]["lr"] = raw["train"]["lr"] / 2
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        stale = json.loads(_dvc(ws, env, "status", "--json").stdout)
        assert sorted(stale) == ["train@001", "train@002"]
        outs_before = _lock_outs(ws)
        ran = _ran(_dvc(ws, env, "repro").stdout)
        assert ran[0] == "train@001"
        upstream = {"prepare", "allocate@001", "sample@001", "verify@001", "critique@001",
                    "judge@001"}
        assert not upstream & set(ran)
        # allocate@002 depends on iter-001's policy (GVM probes it); uniform rewrites the
        # same bytes.
        assert "allocate@002" in ran
        assert _lock_outs(ws)["allocate@002"] == outs_before["allocate@002"]
        assert {"evaluate@001", "sample@002", "train@002", "evaluate@002"} <= set(ran)
    finally:
        (ws / "params.yaml").write_text(params)
    # Back to the old value: DVC's run-cache restores the old outputs instead of training.
    out = _dvc(ws, env, "repro").stdout
    assert "is cached - skipping run" in out
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}


def _ran(stdout: str) -> list[str]:
    return [line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")]


def _fresh_repro(tmp_path_factory, name: str, raw: dict) -> tuple[Path, dict[str, str]]:
    """A workspace of `raw` params after one `dvc repro`, which leaves nothing stale."""
    ws = make_workspace(tmp_path_factory.mktemp(name), raw)
    env = _env(ws)
    _dvc(ws, env, "repro")
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}
    return ws, env


def test_gvm_iteration_through_dvc_and_mlflow(tmp_path_factory):
    """Iteration 002 allocates by GVM: its budget is an output, its histograms reach MLflow,
    and a GVM knob leaves iteration 001's (uniform) samples alone."""
    from mlflow.tracking import MlflowClient

    from cotflow.records import read_table

    raw = micro_params()
    raw["iterations"]["002"]["overrides"] = {"allocate": {"method": "gvm"}}
    ws, env = _fresh_repro(tmp_path_factory, "gvm", raw)
    assert ("artifacts/iter-002/budget.parquet" in
            [p for p, _ in _lock_outs(ws)["allocate@002"]])
    budget = read_table(ws / "artifacts/iter-002/budget.parquet", "budget")
    assert sum(budget["n"]) == 64 and set(budget["probe_samples"]) == {4}
    samples = read_table(ws / "artifacts/iter-002/samples.parquet", "samples")
    assert [samples["prompt_id"].count(p) for p in budget["prompt_id"]] == budget["n"]
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cotflow")
    child = next(r for r in client.search_runs([exp.experiment_id])
                 if r.data.tags.get("cotflow.iteration") == "002")
    assert {a.path for a in client.list_artifacts(child.info.run_id, "allocation")} == {
        "allocation/budget_histograms.png", "allocation/budget.parquet"}
    assert child.data.metrics["allocate/probe_samples"] == 64

    raw["allocate"]["gvm"]["alpha"] = 0.5
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    before = _lock_outs(ws)
    ran = _ran(_dvc(ws, env, "repro").stdout)
    assert {"allocate@001", "allocate@002"} <= set(ran)
    assert not {"prepare", "sample@001", "train@001"} & set(ran)
    assert _lock_outs(ws)["allocate@001"] == before["allocate@001"]


def test_every_trained_parameter_changed(repro_ws):
    ws, _ = repro_ws
    base = load_file(ws / "artifacts/base/policy/model.safetensors")
    final = load_file(ws / "artifacts/iter-002/policy/model.safetensors")
    assert base.keys() == final.keys()
    unchanged = [k for k in base if bool((base[k] == final[k]).all())]
    assert not unchanged
    train = [json.loads((ws / f"artifacts/iter-{k}/stats/train.json").read_text())
             for k in ("001", "002")]
    assert all(t["examples"] > 0 for t in train), train


def test_metrics_and_plots(repro_ws):
    ws, env = repro_ws
    shown = json.loads(_dvc(ws, env, "metrics", "show", "--json").stdout)
    data = next(iter(shown.values()))["data"]
    assert "accuracy" in data["artifacts/iter-002/metrics.json"]["data"]
    plots = json.loads(_dvc(ws, env, "plots", "show", "--json").stdout)
    assert any("iter-002/curve.json" in key for key in plots["data"])
    assert (ws / "artifacts/iter-002/accuracy.png").read_bytes().startswith(b"\x89PNG")


def test_mlflow_parent_and_child_runs(repro_ws):
    from mlflow.tracking import MlflowClient

    from cotflow.tracking import pipeline_key

    ws, _ = repro_ws
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cotflow")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("cotflow.kind") == "pipeline"
               and r.data.tags["cotflow.pipeline_key"] == pipeline_key(ws)]
    assert len(parents) == 1  # the lr test's changed params made a parent of their own
    parent = parents[0]
    assert parent.data.params["train.lr"] == str(micro_params()["train"]["lr"])
    assert parent.data.tags["mlflow.source.git.commit"] not in ("", "unknown")
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId")
                       == parent.info.run_id), key=lambda r: r.data.tags["cotflow.iteration"])
    assert [c.data.tags["cotflow.iteration"] for c in children] == ["001", "002"]
    algorithms = [micro_params()["iterations"][k]["algorithm"] for k in ("001", "002")]
    assert [(c.data.params["algorithm"], c.data.params["kind"]) for c in children] == [
        (a, a) for a in algorithms]  # raft, raft++: entries named as their kind
    for child in children:
        assert child.data.params["train.lr"] == str(micro_params()["train"]["lr"])
        assert "evaluate/accuracy" in child.data.metrics
        assert "train/loss" in child.data.metrics and "sample/tokens_per_s" in child.data.metrics
        assert f"dvc/train/{child.data.tags['cotflow.iteration']}" in child.data.tags
    history = client.get_metric_history(parent.info.run_id, "evaluate/accuracy")
    assert sorted({m.step for m in history}) == [0, 1, 2]  # a rerun logs its step again


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
        repro_ws, prefect_server, tmp_path_factory):
    ws_ref, _ = repro_ws
    ws = make_workspace(tmp_path_factory.mktemp("flow"), micro_params())
    env = _env(ws, PREFECT_API_URL=prefect_server)
    _dvc(ws, env, "repro", "allocate@001")  # DVC starts the work...
    out = _run([sys.executable, "-m", "cotflow", "run"], ws, env)  # ...Prefect finishes it
    assert "prepare" in out.stdout + out.stderr
    assert json.loads(_dvc(ws, env, "status", "--json").stdout) == {}
    assert _lock_outs(ws) == _lock_outs(ws_ref)  # same outputs, byte for byte
    flow_runs = _api(prefect_server, "/flow_runs/filter", {})
    assert any(r["state_type"] == "COMPLETED" for r in flow_runs)
    tasks = _api(prefect_server, "/task_runs/filter", {})
    assert {t["name"] for t in tasks} >= {"prepare", "train@002", "evaluate@002",
                                          "log evaluate@002"}
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
    ("prepare", "checkpoint"),  # mid warm start, just after its step-50 resume checkpoint
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
        repro_ws, prefect_server, tmp_path_factory):
    ws_ref, _ = repro_ws
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

"""Two runs, one workspace: the second refuses clearly and harms nothing; a SIGKILLed
holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cotflow.runlock import WorkspaceBusy, check_stage_allowed, run_lock
from cotflow.workspace import make_workspace
from tests.conftest import micro_params

HOLD = ("import sys, time; from pathlib import Path; from cotflow.runlock import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n"
        "    print('held', flush=True); time.sleep(600)\n")


def _env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "COTFLOW_"))}
    env.update(PREFECT_HOME=str(ws / ".prefect"))
    return env


@pytest.fixture()
def held(tmp_path):
    """A workspace whose run lock another live process holds (as a running `cotflow run`)."""
    ws = make_workspace(tmp_path / "ws", micro_params(tracking={"enabled": False}))
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(ws)], stdout=subprocess.PIPE,
                            text=True, env=_env(ws), start_new_session=True)
    assert proc.stdout.readline().strip() == "held"
    yield ws, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_second_cotflow_run_refuses(held):
    ws, holder = held
    r = subprocess.run([sys.executable, "-m", "cotflow", "run"], cwd=ws, env=_env(ws),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert f"another `cotflow run` (pid {holder.pid}) is running" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (ws / "artifacts").exists() and not (ws / "dvc.lock").exists()


def test_dvc_repro_beside_a_cotflow_run_refuses(held):
    ws, holder = held
    r = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=ws, env=_env(ws),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert f"a `cotflow run` (pid {holder.pid}) is running in this workspace" in r.stderr
    assert not (ws / "artifacts").exists() and not (ws / "dvc.lock").exists()


def test_sigkilled_holder_leaves_no_stale_lock(held):
    ws, holder = held
    with pytest.raises(WorkspaceBusy, match=str(holder.pid)):
        with run_lock(ws):
            pass
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (ws / ".cotflow/run.lock").read_text().strip() == str(holder.pid)  # file stays
    check_stage_allowed(ws)  # ...but binds no one
    with run_lock(ws):
        assert os.environ["COTFLOW_RUN_PID"] == str(os.getpid())
        check_stage_allowed(ws)  # the run's own stages may run
    assert "COTFLOW_RUN_PID" not in os.environ

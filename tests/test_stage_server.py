"""The stage server of `cotflow run` (cotflow/stage_server.py): a stage command hands its
stage to a fork of the warm server and ends as the stage ends; a kill of the command's
process group, or of the command alone, takes the stage too; a command it cannot serve
faithfully (another session) runs the stage itself."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cotflow.stage_server import stage_server
from cotflow.workspace import make_workspace
from tests.conftest import frozen_pid, micro_params


def _stage(ws: Path, fault: str | None = None, **popen) -> subprocess.Popen:
    shutil.rmtree(ws / "faults", ignore_errors=True)  # each fault fires once per marker
    env = {**os.environ, "COTFLOW_FAULT_DIR": str(ws / "faults")}
    if fault:
        env["COTFLOW_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "cotflow", "stage", "critique",
                             "--iteration", "001"], cwd=ws, env=env, **popen)


def _stopped(ws: Path, point: str) -> int:
    """The pid of the stage process that stopped itself at `point`."""
    return frozen_pid(ws / "faults" / f"critique@001.{point}")


def _gone(pid: int, within_s: float = 30) -> bool:
    deadline = time.time() + within_s
    while time.time() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.1)
    return False


def test_stage_commands_run_in_forks_of_the_server(tmp_path):
    ws = make_workspace(tmp_path / "ws", micro_params(tracking={"enabled": False}))
    out = ws / "artifacts/iter-001/critiques.parquet"
    with stage_server(ws):
        client = _stage(ws, "critique@001:start:stop", process_group=0)
        stage = _stopped(ws, "start")
        assert stage != client.pid  # the server's fork, not the command DVC started
        os.kill(stage, signal.SIGCONT)
        assert client.wait(timeout=300) == 0 and out.is_file()

        assert _stage(ws, "critique@001:start:fail").wait(timeout=300) == 2
        # The stage's kill of its process group (the pipeline's, under `dvc repro`) takes
        # the command along: the fork joined the command's group.
        assert _stage(ws, "critique@001:done:kill", process_group=0).wait(timeout=300) == \
            -signal.SIGKILL

        # A command killed alone (SIGKILL: it can pass nothing on) takes its stage along.
        client = _stage(ws, "critique@001:start:stop", process_group=0)
        stage = _stopped(ws, "start")
        client.kill()
        assert client.wait(timeout=60) == -signal.SIGKILL and _gone(stage)

        # From another session the fork could not join the command's group: declined, the
        # command runs the stage itself.
        client = _stage(ws, "critique@001:start:stop", start_new_session=True)
        assert _stopped(ws, "start") == client.pid
        os.kill(client.pid, signal.SIGCONT)
        assert client.wait(timeout=300) == 0
    assert "COTFLOW_STAGE_SERVER" not in os.environ

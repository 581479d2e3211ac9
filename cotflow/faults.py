"""Fault injection for the crash tests: make a stage die for real at a named point.

``COTFLOW_FAULT="STAGE:POINT:ACTION"`` (STAGE as DVC names it: ``warmstart``, ``train@001``)
acts when that stage's process reaches POINT:

    start       the stage has loaded its params
    write       an atomic write has its temporary complete, just before the rename
    checkpoint  the trainer has just saved a resume checkpoint
    done        the stage's outputs are written, its stats file is not

ACTION ``kill`` SIGKILLs the stage's whole process group (with ``dvc repro`` started in a
session of its own, that is the pipeline: DVC, the stage and its workers); ``stop`` sends
SIGSTOP to the stage (DVC keeps holding its lock, so a test can try a second run);
``fail`` raises. With ``COTFLOW_FAULT_DIR`` set, a fault fires once: it leaves a marker
file there first and never fires again while the marker exists (a retried stage succeeds).
Unset, this module does nothing but read one environment variable.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "COTFLOW_FAULT"
DIR_ENV = "COTFLOW_FAULT_DIR"
POINTS = ("start", "write", "checkpoint", "done")
ACTIONS = ("kill", "stop", "fail")

_stage: str | None = None


class InjectedFault(RuntimeError):
    """Raised by the ``fail`` action."""


def enter_stage(stage: str) -> None:
    """Name the stage this process runs (a base stage, ``warmstart``, or ``NAME@KEY``)."""
    global _stage
    _stage = stage


def marker(stage: str, point: str) -> Path | None:
    """Where a fired fault leaves its mark (None without ``COTFLOW_FAULT_DIR``)."""
    folder = os.environ.get(DIR_ENV)
    return Path(folder) / f"{stage}.{point}" if folder else None


def point(name: str) -> None:
    """Act if ``COTFLOW_FAULT`` names this stage and point."""
    spec = os.environ.get(ENV)
    if not spec or _stage is None:
        return
    try:
        stage, where, action = spec.split(":")
    except ValueError:
        raise ValueError(f"{ENV}={spec!r}: expected STAGE:POINT:ACTION") from None
    if where not in POINTS or action not in ACTIONS:
        raise ValueError(f"{ENV}={spec!r}: POINT is one of {POINTS}, ACTION one of {ACTIONS}")
    if stage != _stage or where != name:
        return
    mark = marker(stage, where)
    if mark is not None:
        if mark.exists():
            return
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text(f"{os.getpid()}\n")
    if action == "kill":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    elif action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        raise InjectedFault(f"injected fault at {stage}:{where}")

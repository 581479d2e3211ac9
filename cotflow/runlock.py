"""One pipeline run per workspace.

DVC serialises its own commands: a second `dvc repro` meets the repo lock
(``.dvc/tmp/lock``) or, while a stage's command runs, that stage's file locks
(``.dvc/tmp/rwlock``), and stops with "... is busy". But `cotflow run` makes one DVC call
per stage, so between two stages a `dvc repro` could slip in. `cotflow run` therefore
holds a lock of its own for its whole run, and a stage command started by anyone else
while it is held refuses to run. The lock is a kernel lock (flock) on an open file, as
DVC's are (lockf; dead pids in rwlock are ignored): a SIGKILLed holder releases it, so no
stale lock ever needs removing by hand.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK = Path(".cotflow") / "run.lock"
OWNER_ENV = "COTFLOW_RUN_PID"  # set for the stages a `cotflow run` starts (DVC passes env on)


class WorkspaceBusy(RuntimeError):
    """Another run holds this workspace."""


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 64).decode(errors="replace").strip() or "?"


@contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold the workspace's run lock, or raise WorkspaceBusy naming the holder."""
    path = Path(root) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited across exec
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceBusy(
                f"{root}: another `cotflow run` (pid {_holder(fd)}) is running in this "
                "workspace; wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.environ[OWNER_ENV] = str(os.getpid())
        try:
            yield
        finally:
            os.environ.pop(OWNER_ENV, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_stage_allowed(root: Path) -> None:
    """Refuse a stage command that is not part of the `cotflow run` holding the workspace."""
    path = Path(root) / LOCK
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        holder = _holder(fd)
        if os.environ.get(OWNER_ENV) == holder:
            return  # started by that very run
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkspaceBusy(
                f"{root}: a `cotflow run` (pid {holder}) is running in this workspace and "
                "this stage is not part of it; wait for it to finish or stop it") from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_dvc_idle(root: Path) -> None:
    """Refuse to start while a DVC command (such as `dvc repro`) is at work here.

    DVC holds its repo lock only between stages; while a stage's command runs it holds
    read/write locks on that stage's files instead (.dvc/tmp/rwlock, entries by pid), so
    both are checked. Entries of dead processes are stale and ignored, as DVC does.
    """
    import json

    import psutil
    import zc.lockfile

    tmp = Path(root) / ".dvc" / "tmp"
    if not tmp.is_dir():
        return
    busy: list[tuple[int, str]] = []
    try:
        zc.lockfile.LockFile(str(tmp / "lock")).close()
    except zc.lockfile.LockError:
        busy.append((0, "holds .dvc/tmp/lock"))
    try:
        rw = json.loads((tmp / "rwlock").read_text())
    except (OSError, ValueError):
        rw = {}
    infos = list(rw.get("write", {}).values()) + [
        i for infos in rw.get("read", {}).values() for i in infos]
    busy += [(i["pid"], i["cmd"]) for i in infos
             if isinstance(i, dict) and psutil.pid_exists(i.get("pid", -1))]
    if busy:
        pid, cmd = max(busy)
        who = f"pid {pid}: {cmd}" if pid else cmd
        raise WorkspaceBusy(f"{root}: a DVC command is running in this workspace ({who}); "
                            "wait for it to finish")

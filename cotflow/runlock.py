"""One pipeline run per workspace.

DVC holds its repository lock (``.dvc/tmp/lock``) only while one `reproduce` call runs, and
`cotflow run` makes one call per stage, so between two stages a second `dvc repro` could
slip in. `cotflow run` therefore holds a lock of its own for its whole run, and a stage
command started by anyone else while it is held refuses to run. Both locks are kernel
locks (flock / lockf) on an open file: a SIGKILLed holder releases them, so no stale lock
ever needs removing by hand.
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
    """Refuse to start while a DVC command (such as `dvc repro`) holds the repo lock."""
    import zc.lockfile

    path = Path(root) / ".dvc" / "tmp" / "lock"
    if not path.parent.is_dir():
        return
    try:
        zc.lockfile.LockFile(str(path)).close()
    except zc.lockfile.LockError:
        raise WorkspaceBusy(
            f"{root}: a DVC command (such as `dvc repro`) is running in this workspace "
            "(it holds .dvc/tmp/lock); wait for it to finish") from None

"""Shared artifact store: push the workspace's DVC-tracked artifacts to `store.dvc_remote`.

The remote is written to the workspace's local DVC config (`.dvc/config.local`, not
committed) under the name `cotflow`, so params.yaml stays the one place that names it and
any machine can `dvc pull -r cotflow` what another produced.
"""

from __future__ import annotations

import os
from pathlib import Path

REMOTE = "cotflow"


def remote_url(url: str, root: Path) -> str:
    """A folder path relative to the workspace becomes absolute (DVC would read it relative
    to .dvc/); URLs with a scheme are left as they are."""
    if "://" in url or os.path.isabs(url):
        return url
    return str((Path(root) / url).resolve())


def push(root: Path, url: str) -> int:
    """Point remote `cotflow` at `url` and push every cached output; return files pushed."""
    from dvc.repo import Repo

    root = Path(root).resolve()
    cwd = os.getcwd()
    os.chdir(root)  # DVC resolves targets against the working directory
    try:
        with Repo(str(root)) as repo:
            with repo.config.edit("local") as conf:
                conf["remote"][REMOTE] = {"url": remote_url(url, root)}
            return int(repo.push(remote=REMOTE))
    finally:
        os.chdir(cwd)

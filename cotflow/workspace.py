"""A fresh workspace from this project's files: what a clone of main gives, for tests and
benchmarks that must run the pipeline from nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]
SKIP = ("tests/", "benchmarks/", ".ci/")
# What running the project leaves in a checkout (a user's `dvc repro`, `dvc plots show`;
# artifacts/*/metrics.json and accuracy.png are not git-ignored, for DVC's experiments): a
# fresh workspace starts without it, whatever state the checkout is in, even committed.
LEFT_BY_RUNS = ("dvc.lock", "dvc_plots/", "artifacts/")


def make_workspace(dest: Path, params: dict[str, Any] | None = None,
                   project: Path = PROJECT) -> Path:
    """Copy the project's tracked and untracked-not-ignored files, less what runs leave
    (LEFT_BY_RUNS), into `dest`, optionally replace params.yaml, and commit it all to a new
    git repository there."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=project,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.startswith(SKIP + LEFT_BY_RUNS) or not (project / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / name, dest / name)
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "cotflow", "GIT_AUTHOR_EMAIL": "cotflow@localhost",
           "GIT_COMMITTER_NAME": "cotflow", "GIT_COMMITTER_EMAIL": "cotflow@localhost"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest

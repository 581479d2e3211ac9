"""Shared fixtures: micro params, a workspace copy of the project, offline environment."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cotflow.env import apply_defaults

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "data" / "params.micro.yaml"

apply_defaults(ROOT)


def micro_params(**section_updates: dict) -> dict:
    raw = yaml.safe_load(MICRO.read_text())
    for section, values in section_updates.items():
        raw[section].update(values)
    return raw


def make_workspace(dest: Path, params: dict) -> Path:
    """A fresh git + DVC workspace holding the project's files, like a clone of main."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name.startswith(("tests/", "benchmarks/", ".ci/")) or not (ROOT / name).is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


@pytest.fixture
def workspace_env(tmp_path_factory):
    """Environment for subprocesses in a workspace (caches and stores inside it)."""
    def build(ws: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_", "MLFLOW_TRACKING_URI", "COTFLOW_"))}
        env.update(PREFECT_HOME=str(ws / ".prefect"), HF_HOME=str(ws / ".cache" / "hf"),
                   MPLCONFIGDIR=str(ROOT / ".cache" / "matplotlib"))
        return env
    return build

"""A test workspace holds the project's files, whatever running the project left in the
checkout (issue 18: a user's dvc.lock made four tests fail)."""

from __future__ import annotations

import subprocess

from cotflow.workspace import PROJECT, make_workspace


def test_workspace_leaves_out_what_runs_left_and_keeps_new_files(tmp_path):
    project = tmp_path / "checkout"
    (project / "dvc_plots").mkdir(parents=True)
    (project / ".gitignore").write_text((PROJECT / ".gitignore").read_text())
    for name in ("dvc.yaml", "params.yaml", "dvc.lock", "dvc_plots/index.html", "mlflow.db",
                 "new_module.py"):
        (project / name).write_text(name)
    (project / "artifacts/iter-001").mkdir(parents=True)
    for name in ("x.parquet", "iter-001/metrics.json", "iter-001/accuracy.png"):
        (project / "artifacts" / name).write_text("x")  # the last two: not git-ignored
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "add", "dvc.yaml", "params.yaml", ".gitignore", "dvc.lock"],
                   cwd=project, check=True)  # even a committed dvc.lock stays behind
    ws = make_workspace(tmp_path / "ws", {"seed": 3}, project=project)
    copied = {p.relative_to(ws).as_posix() for p in ws.rglob("*")
              if p.is_file() and ".git/" not in p.as_posix()}
    assert copied == {".gitignore", "dvc.yaml", "params.yaml", "new_module.py"}
    assert (ws / "params.yaml").read_text() == "seed: 3\n"

"""The command line: clear one-line errors, nothing written on bad input, `show`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from cotflow.records import write_table
from tests.conftest import micro_params


def _cotflow(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotflow", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=300)


def _workspace(tmp_path: Path, params: dict) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_bad_params_stop_before_anything_is_written(tmp_path):
    params = micro_params()
    params["allocate"]["n"] = 0
    ws = _workspace(tmp_path, params)
    r = _cotflow(ws, "stage", "data")
    assert r.returncode == 2
    assert "allocate.n: Input should be greater than 0" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (ws / "artifacts").exists()
    r = _cotflow(ws, "run")
    assert r.returncode == 2 and "allocate.n" in r.stderr


def test_missing_model_path_is_one_line_and_writes_nothing(tmp_path):
    params = micro_params(model={"name_or_path": str(tmp_path / "no-such-model")},
                          tracking={"enabled": False})
    ws = _workspace(tmp_path, params)
    r = _cotflow(ws, "stage", "data")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert "no-such-model" in lines[-1] and "config.json" in lines[-1]
    assert "dvc repro" not in lines[-1]  # a path the user typed: no stage writes it
    assert not any("Traceback" in line for line in lines)
    assert not (ws / "artifacts").exists()


def test_show_prints_a_table(tmp_path):
    path = write_table(tmp_path / "allocation.parquet", "allocation",
                       [{"prompt_id": "p1", "n": 4}, {"prompt_id": "p2", "n": 8}])
    r = _cotflow(tmp_path, "show", str(path))
    assert r.returncode == 0, r.stderr
    assert "2 rows x 2 columns" in r.stdout and "p2" in r.stdout
    r = _cotflow(tmp_path, "show", str(tmp_path / "nothing.parquet"))
    assert r.returncode == 2 and "no such artifact" in r.stderr

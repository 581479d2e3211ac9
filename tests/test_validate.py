"""`cotflow validate`, dvc.yaml's first stage: what it refuses (one line naming the key) and
that its output holds the same bytes whatever the params. Under DVC: test_bad_input_e2e.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from cotflow.cli import main
from tests.conftest import micro_params


def _validate(ws: Path, params: dict, capsys, monkeypatch) -> tuple[int, str]:
    """`cotflow --root ws validate` in this process: exit code and last line of stderr."""
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.delenv("COTFLOW_DEBUG", raising=False)
    code = main(["--root", str(ws), "validate"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, (err.strip().splitlines() or [""])[-1]


def test_the_mark_does_not_change_with_the_params(tmp_path, capsys, monkeypatch):
    params = micro_params()
    assert _validate(tmp_path, params, capsys, monkeypatch)[0] == 0
    mark = (tmp_path / "artifacts" / "validated.json").read_bytes()
    params["train"]["lr"] /= 2
    assert _validate(tmp_path, params, capsys, monkeypatch)[0] == 0
    assert (tmp_path / "artifacts" / "validated.json").read_bytes() == mark
    assert "params.yaml is valid" in (tmp_path / "logs" / "validate.log").read_text()


@pytest.mark.parametrize(
    ("section", "values", "needle"),
    [
        ("data", {"source": "data/my_problems.jsonl"},
         "data.source: data/my_problems.jsonl: file not found"),
        ("data", {"source": "./my_folder"}, "data.source: ./my_folder: no such file or folder"),
        ("model", {"name_or_path": "./no-such-model"},
         "model.name_or_path './no-such-model': no saved checkpoint there (no config.json)"),
        ("model", {"name_or_path": "no-such-org/no-such-model"},
         "model.name_or_path 'no-such-org/no-such-model': not in the local Hugging Face cache"),
        ("allocate", {"n": 0}, "allocate.n: Input should be greater than 0"),
    ],
)
def test_refused_with_the_key_and_nothing_written(tmp_path, capsys, monkeypatch, section,
                                                  values, needle):
    # conftest.py applied cotflow/env.py's defaults: HF_HUB_OFFLINE=1
    code, last = _validate(tmp_path, micro_params(**{section: values}), capsys, monkeypatch)
    assert code == 2 and last.startswith("cotflow: error: ") and needle in last, last
    assert "dvc repro" not in last  # a path the user typed: no stage writes it
    assert not (tmp_path / "artifacts").exists()
    assert needle in (tmp_path / "logs" / "validate.log").read_text()


def test_a_local_model_and_data_file_pass(tmp_path, capsys, monkeypatch):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "problems.jsonl").write_text("")
    params = micro_params(model={"name_or_path": "model"}, data={"source": "problems.jsonl"})
    assert _validate(tmp_path, params, capsys, monkeypatch)[0] == 0


def test_an_iterations_backend_extra_is_checked(tmp_path, capsys, monkeypatch):
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    params = micro_params()
    params["iterations"]["002"]["overrides"] = {"train": {"backend": "deepspeed"}}
    code, last = _validate(tmp_path, params, capsys, monkeypatch)
    assert code == 2
    assert "iterations.002.overrides: train.backend deepspeed needs the extra" in last

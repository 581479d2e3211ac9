"""flows/dvc_lock.py: DVC's update of dvc.lock through the safe loader writes the bytes the
round-trip loader would, and leaves every other YAML file to the round-trip loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.dvc_lock import read_lock_safely


def _lock() -> dict:
    """A dvc.lock as DVC lays it out, with the scalars YAML readers disagree on."""
    stage = {
        "cmd": "python -m cotflow stage train --iteration 001 # not a comment: a 'quoted' \"x\"",
        "deps": [{"path": "cotflow/config.py", "hash": "md5", "md5": "0123abcd", "size": 1234},
                 {"path": "artifacts/base/policy", "hash": "md5",
                  "md5": "89ab.dir", "size": 356624, "nfiles": 5}],
        "params": {"params.yaml": {
            "train": {"lr": 1e-05, "betas": [0.9, 0.999], "dedup": True, "epochs": 2,
                      "warmup_steps": 0, "weight_decay": 0.0, "max_len": None},
            "iterations.001": {"algorithm": "raft", "prev": "base"},
            "data.prompt_template": "{question}\n", "word": "yes", "octal": "0777",
            "sci": 2.5e-310, "neg": -0.0, "big": 12345678901234567890, "ws": "  padded ",
            "unicode": "Lösung → ✓", "colon": "a: b", "empty": ""}},
        "outs": [{"path": "artifacts/iter-001/policy", "hash": "md5", "md5": "cdef.dir",
                  "size": 356624, "nfiles": 5}],
    }
    return {"schema": "2.0", "stages": {"train@001": stage, "data": {**stage, "cmd": "x"}}}


def _update(path: Path, parse) -> str:
    from dvc.utils.serialize._common import _modify_data
    from dvc.utils.serialize._yaml import _dump

    with _modify_data(path, parse, _dump) as data:
        data["stages"]["evaluate@001"] = {"cmd": "python -m cotflow stage evaluate",
                                          "outs": [{"path": "a.json", "md5": "1"}]}
        data["stages"]["data"]["params"]["params.yaml"]["train"]["lr"] = 3e-06
    return path.read_text(encoding="utf-8")


def test_the_lock_comes_out_byte_for_byte_as_through_the_round_trip_loader(tmp_path):
    from dvc.utils.serialize import _yaml

    original = _yaml.parse_yaml_for_update
    a, b = tmp_path / "a" / "dvc.lock", tmp_path / "b" / "dvc.lock"
    for path in (a, b):
        path.parent.mkdir()
        with path.open("w", encoding="utf-8") as f:
            _yaml._dump(_lock(), f)
    expected = _update(a, original)
    read_lock_safely()  # undone after each test by _restore
    patched = _yaml.parse_yaml_for_update
    read_lock_safely()  # idempotent: one wrapper, not two
    assert _yaml.parse_yaml_for_update is patched is not original
    assert _update(b, _yaml.parse_yaml_for_update) == expected
    assert "3e-06" in expected and "evaluate@001" in expected


def test_other_yaml_files_keep_their_comments(tmp_path):
    from dvc.utils.serialize import modify_yaml

    path = tmp_path / "dvc.yaml"
    path.write_text("stages:\n  data:  # the splits\n    cmd: python x.py\n")
    read_lock_safely()
    with modify_yaml(path) as data:
        data["stages"]["data"]["cmd"] = "python y.py"
    assert path.read_text() == "stages:\n  data:  # the splits\n    cmd: python y.py\n"


@pytest.fixture(autouse=True)
def _restore():
    from dvc.utils.serialize import _yaml

    saved = _yaml.parse_yaml_for_update
    yield
    _yaml.parse_yaml_for_update = saved

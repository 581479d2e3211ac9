"""SPO-chain through the stages on a temporary workspace with the tiny model: continuation
sampling from token ids, the MC values the sample stage writes, and the spo recipe's
training on them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from cotflow.algorithms.spo import segment_boundaries
from cotflow.config import load_params
from cotflow.layout import Layout
from cotflow.records import read_table, rows_of
from cotflow.workspace import make_workspace
from tasks.common import iteration_layout, run_base, run_stage
from tests.conftest import micro_params


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    raw = micro_params(tracking={"enabled": False})
    raw["iterations"] = {"001": {"algorithm": "spo", "prev": "base"}}
    root = make_workspace(tmp_path_factory.mktemp("spo"), raw)
    run_base(root, root / "params.yaml")
    return root


def test_hf_continues_from_token_ids(ws):
    from models.hf_sampler import HFSampler

    sampler = HFSampler(Layout(ws).base_policy, batch_size=8, threads=1)
    problem = rows_of(read_table(Layout(ws).test_set, "problems"))[0]
    prompt = problem["question"] + "\n"
    (full,) = sampler.generate([prompt], max_new_tokens=32, temperature=1.0, top_p=1.0,
                               seed=0, greedy=True)
    # From the prompt's ids plus the first 5 generated tokens, greedy goes on the same way.
    prefix = full.prompt_ids + full.token_ids[:5]
    (cont,) = sampler.generate([prefix], max_new_tokens=27, temperature=1.0, top_p=1.0,
                               seed=0, greedy=True)
    assert cont.prompt_ids == prefix
    assert full.token_ids[:5] + cont.token_ids == full.token_ids
    twice = sampler.generate([prefix, prefix], max_new_tokens=8, temperature=1.0, top_p=1.0,
                             seed=3)
    again = sampler.generate([prefix, prefix], max_new_tokens=8, temperature=1.0, top_p=1.0,
                             seed=3)
    assert [c.token_ids for c in twice] == [c.token_ids for c in again]  # seeded
    with pytest.raises(ValueError, match="mix text and token ids"):
        sampler.generate([prompt, prefix], max_new_tokens=4, temperature=1.0, top_p=1.0,
                         seed=0)


def test_sample_stage_writes_segments_and_mc_values(ws):
    run_stage("allocate", "1", ws, ws / "params.yaml")
    stats = run_stage("sample", "1", ws, ws / "params.yaml")
    cfg = load_params(ws / "params.yaml")
    seg = cfg.sample.segments
    it = iteration_layout(cfg, ws, "001")
    samples = read_table(it.samples, "samples")
    values = read_table(it.values, "values")
    conts = read_table(it.continuations, "continuations")
    assert list(zip(values["prompt_id"], values["sample_idx"], strict=True)) == list(
        zip(samples["prompt_id"], samples["sample_idx"], strict=True))
    returns = defaultdict(list)
    for pid, idx, b, reward, ids in zip(conts["prompt_id"], conts["sample_idx"],
                                        conts["prefix_tokens"], conts["reward"],
                                        conts["completion_ids"], strict=True):
        returns[(pid, idx, b)].append(reward)
        assert reward in (-2.0, 0.0, 1.0) and len(ids) <= cfg.sample.max_new_tokens - b
    assert all(len(r) == seg.rollouts for r in returns.values())
    assert stats["mc_samples"] == len(conts["reward"]) == seg.rollouts * len(returns)
    assert stats["mc_samples"] > 0 and stats["segments_per_response"] > 0
    # Each response's boundaries are its cutpoints' every m-th, and each value is the mean
    # return of the continuations of its state (shared states are valued once).
    by_state = {}
    for (pid, idx, b), r in returns.items():
        by_state[(pid, idx, b)] = sum(r) / len(r)
    for pid, idx, probs, bounds, vs, c_ids in zip(
            values["prompt_id"], values["sample_idx"], values["probs"], values["boundaries"],
            values["values"], samples["completion_ids"], strict=True):
        assert len(probs) == len(c_ids) and all(0 < p <= 1 for p in probs)
        assert bounds == segment_boundaries(probs, seg.interval, seg.rho)
        assert len(vs) == len(bounds)
        for b, v in zip(bounds, vs, strict=True):
            if (pid, idx, b) in by_state:
                assert v == pytest.approx(by_state[(pid, idx, b)])


def test_spo_trains_on_the_values(ws):
    run_stage("verify", "1", ws, ws / "params.yaml")
    for stage in ("critique", "judge"):
        run_stage(stage, "1", ws, ws / "params.yaml")
    stats = run_stage("train", "1", ws, ws / "params.yaml")
    assert stats["kind"] == "spo" and stats["optimizer_steps"] > 0
    assert 0 < stats["masked_token_share"] < 1 and stats["segments_per_response"] > 0
    it = iteration_layout(load_params(ws / "params.yaml"), ws, "001")
    before = load_file(it.prev_policy / "model.safetensors")
    after = load_file(it.policy / "model.safetensors")
    assert any((before[k] != after[k]).any() for k in before)


def test_missing_values_are_named(ws):
    from cotflow.records import write_table

    it = iteration_layout(load_params(ws / "params.yaml"), ws, "001")
    write_table(it.values, "values", [])
    with pytest.raises(ValueError, match="no MC values for sample"):
        run_stage("train", "1", ws, ws / "params.yaml")


def test_spo_tree_samples_trees_and_trains_on_their_edges(ws):
    from cotflow.algorithms.spo import nodes_per_tree

    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["iterations"] = {"001": {"algorithm": "spo-tree", "prev": "base", "overrides": {
        "allocate": {"prompts_per_iteration": 3, "n": 1}}}}
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run_stage("allocate", "1", ws, ws / "params.yaml")
    stats = run_stage("sample", "1", ws, ws / "params.yaml")
    cfg = load_params(ws / "params.yaml")
    it = iteration_layout(cfg, ws, "001")
    tree = rows_of(read_table(it.tree, "tree"))
    samples = rows_of(read_table(it.samples, "samples"))
    assert stats["trees"] == 3 and stats["tree_nodes"] == len(tree)
    assert len(tree) <= 3 * nodes_per_tree(cfg.sample.tree.branching)
    assert stats["mc_samples"] == sum(n["leaf"] < 0 for n in tree)
    node = {(n["prompt_id"], n["node"]): n for n in tree}
    leaves = {(n["prompt_id"], n["leaf"]): n for n in tree if n["leaf"] >= 0}
    assert sorted(leaves) == sorted((s["prompt_id"], s["sample_idx"]) for s in samples)
    for s in samples:
        # A leaf's completion is its ancestors' segments and its own, in order.
        n, ids = leaves[(s["prompt_id"], s["sample_idx"])], []
        while True:
            ids = list(n["token_ids"]) + ids
            assert n["depth"] < len(cfg.sample.tree.branching)
            if n["parent"] < 0:
                break
            n = node[(s["prompt_id"], n["parent"])]
        assert ids == s["completion_ids"]
    inner = [n for n in tree if n["leaf"] < 0]
    assert all(len(n["token_ids"]) == cfg.sample.tree.segment_tokens for n in inner)
    run_stage("verify", "1", ws, ws / "params.yaml")
    for stage in ("critique", "judge"):
        run_stage(stage, "1", ws, ws / "params.yaml")
    trained = run_stage("train", "1", ws, ws / "params.yaml")
    assert trained["kind"] == "spo-tree" and trained["trees"] == 3
    assert trained["edges_trained"] <= 3 * 32

"""benchmarks/trl_grpo.py --sweep's design (benchmarks/trl_sweep.py) and its mapping of
knobs onto GRPOConfig's arguments, on hand-worked cases; TRL itself is not needed."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from trl_grpo import bench_params, write_params  # noqa: E402
from trl_side import matched_knobs, trl_kwargs  # noqa: E402
from trl_sweep import (  # noqa: E402
    Knobs,
    coordinate_search,
    design,
    expected_seconds,
    planned_runs,
    trl_defaults,
)

from cotflow.config import load_params  # noqa: E402

# GRPOConfig's defaults in trl 1.16.0 (trl/trainer/grpo_config.py)
TRL = Knobs(learning_rate=1e-6, loss_type="dapo", num_iterations=1, scale_rewards="group",
            beta=0.0)
# what cotflow's grpo preset does, in GRPOConfig's terms
CENTRE = Knobs(learning_rate=1e-4, loss_type="grpo", num_iterations=1, scale_rewards="group",
               beta=0.04)


def test_trl_defaults_are_read_from_the_config_dataclass() -> None:
    @dataclasses.dataclass
    class FakeConfig:
        output_dir: str = "out"
        learning_rate: float = 1e-6
        loss_type: str = "dapo"
        num_iterations: int = 1
        scale_rewards: str = "group"
        beta: float = 0.0

    assert trl_defaults(FakeConfig) == TRL


def test_trl_defaults_of_the_pinned_release() -> None:
    trl = pytest.importorskip("trl")  # the bench extra
    if trl.__version__ != "1.16.0":
        pytest.skip(f"trl {trl.__version__}: TRL above is 1.16.0's")
    assert trl_defaults(trl.GRPOConfig) == TRL


def test_design_holds_the_centre_first_then_trls_default_then_alternatives() -> None:
    grid = design(CENTRE, TRL)
    assert grid == {"learning_rate": [1e-4, 1e-6, 1e-5, 3e-5],
                    "loss_type": ["grpo", "dapo", "dr_grpo"],
                    "num_iterations": [1, 2],
                    "scale_rewards": ["group", "none"],
                    "beta": [0.04, 0.0]}
    # the centre, 3 other rates, 2 other losses, and one more of each other knob
    assert planned_runs(CENTRE, grid) == 1 + 3 + 2 + 1 + 1 + 1
    assert design(CENTRE, TRL, ["beta"]) == {"beta": [0.04, 0.0]}
    assert list(design(CENTRE, TRL, ["beta", "learning_rate"])) == ["beta", "learning_rate"]
    assert planned_runs(CENTRE, design(CENTRE, TRL, ["beta"])) == 2
    with pytest.raises(ValueError, match="unknown knobs"):
        design(CENTRE, TRL, ["lr"])


def test_coordinate_search_moves_from_the_best_so_far_and_ties_keep_the_earlier() -> None:
    # Accuracy peaks at lr 3e-5; dr_grpo helps only at that rate; beta 0 ties the centre's.
    def score(k: Knobs) -> float:
        acc = {1e-6: 0.70, 1e-5: 0.72, 3e-5: 0.74, 1e-4: 0.60}[k.learning_rate]
        if k.loss_type == "dr_grpo" and k.learning_rate == 3e-5:
            acc += 0.01
        return acc - 0.05 * (k.num_iterations - 1) - 0.02 * (k.scale_rewards == "none")

    calls: list[Knobs] = []
    best, scored = coordinate_search(CENTRE, design(CENTRE, TRL),
                                     lambda k: calls.append(k) or score(k))
    assert best == dataclasses.replace(CENTRE, learning_rate=3e-5, loss_type="dr_grpo")
    assert len(calls) == len(set(calls)) == planned_runs(CENTRE, design(CENTRE, TRL))
    assert [k for k, _ in scored] == calls
    assert calls[:4] == [dataclasses.replace(CENTRE, learning_rate=lr)
                         for lr in (1e-4, 1e-6, 1e-5, 3e-5)]
    # later knobs vary around the best so far: lr 3e-5, then dr_grpo too
    assert calls[4] == dataclasses.replace(CENTRE, learning_rate=3e-5, loss_type="dapo")
    assert calls[-1] == dataclasses.replace(best, beta=0.0)
    assert dict(scored)[best] == pytest.approx(0.75)


def bench_cfg(tmp_path: Path, prompts: int):
    args = argparse.Namespace(seed=0, eval_size=50, n_train=None, warmstart_steps=None,
                              prompts=prompts)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return load_params(write_params(tmp_path, bench_params(base, args), 2))


def test_matched_knobs_and_grpo_config_arguments_follow_the_preset(tmp_path: Path) -> None:
    cfg = bench_cfg(tmp_path, prompts=128)
    assert matched_knobs(cfg) == CENTRE
    kw = trl_kwargs(cfg, 2, tmp_path / "out", CENTRE)
    # 128 prompts × 8 = 1024 samples, the preset's 4 steps of 256 in micro-batches of 64
    assert (kw["generation_batch_size"], kw["per_device_train_batch_size"],
            kw["gradient_accumulation_steps"]) == (1024, 64, 4)
    assert (kw["max_steps"], kw["ref_model_sync_steps"], kw["sync_ref_model"]) == (8, 4, True)
    assert (kw["learning_rate"], kw["loss_type"], kw["scale_rewards"], kw["beta"]) == \
        (1e-4, "grpo", "group", 0.04)
    assert kw["gradient_checkpointing"] is False
    other = Knobs(learning_rate=3e-5, loss_type="dapo", num_iterations=2, scale_rewards="none",
                  beta=0.0)
    kw = trl_kwargs(cfg, 2, tmp_path / "out", other)
    # two passes: 8 optimizer steps per generation batch; no KL, no reference to sync
    assert (kw["num_iterations"], kw["max_steps"], kw["ref_model_sync_steps"]) == (2, 16, 8)
    assert (kw["learning_rate"], kw["loss_type"], kw["scale_rewards"], kw["beta"],
            kw["sync_ref_model"]) == (3e-5, "dapo", "none", 0.0, False)


def test_small_sweep_batches_run_a_mini_batch_as_one_micro_batch(tmp_path: Path) -> None:
    # 8 prompts × 8 = 64 samples in the preset's 4 steps of 16: below micro_batch_size 64
    kw = trl_kwargs(bench_cfg(tmp_path, prompts=8), 1, tmp_path / "out", CENTRE)
    assert (kw["generation_batch_size"], kw["per_device_train_batch_size"],
            kw["gradient_accumulation_steps"], kw["max_steps"]) == (64, 16, 1, 4)


def test_expected_seconds_adds_both_sides_the_sweep_and_the_warm_start() -> None:
    rates = {"iteration_per_sample": 0.01, "eval_per_problem": 0.1, "trl_per_cotflow": 2.0,
             "per_iteration": 5.0, "prepare": 100.0}
    # full: 4 iterations × ((1 + 2) · 1024 · 0.01 + 2 · 400 · 0.1) = 4 · 110.72 = 442.88
    # sweep: (1 + 9 · 2) · 512 · 0.01 + (1 + 9) · 200 · 0.1 = 97.28 + 200; warm: 600 · 0.1
    # fixed: 5 s × (2 · 4 full + 1 cotflow row + 9 TRL runs) = 90
    kw = dict(runs=9, sweep_samples=512, sweep_eval=200, samples=1024, eval_size=400,
              iterations=4, rates=rates)
    expected = 442.88 + 297.28 + 60 + 90
    assert expected_seconds(prepare=False, **kw) == pytest.approx(expected)
    assert expected_seconds(prepare=True, **kw) == pytest.approx(expected + 100)

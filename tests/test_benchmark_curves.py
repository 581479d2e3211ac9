"""The benchmarks' arithmetic (samples to reach a target, speedup, mean curves) on
hand-computed numbers, and the GVM benchmark's arms as valid, equal-budget params."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from gvm_speedup import ARMS, speedup  # noqa: E402
from harness import by_iteration, mean_curve, preset_params, samples_to_reach  # noqa: E402

from cotflow.config import load_params  # noqa: E402

UNIFORM = [(0, 0.70), (100, 0.72), (200, 0.76)]


def test_samples_to_reach_interpolates_the_first_crossing() -> None:
    # 0.74 lies halfway between 0.72 (at 100) and 0.76 (at 200)
    assert samples_to_reach(UNIFORM, 0.74) == pytest.approx(150.0)
    assert samples_to_reach(UNIFORM, 0.76) == pytest.approx(200.0)
    assert samples_to_reach(UNIFORM, 0.70) == 0
    assert samples_to_reach(UNIFORM, 0.77) is None
    # a dip does not count as reaching: the first crossing after it does
    assert samples_to_reach([(0, 0.70), (10, 0.60), (20, 0.80)], 0.75) == pytest.approx(17.5)


def test_speedup_is_uniform_samples_over_gvm_samples_to_uniforms_final_accuracy() -> None:
    # GVM reaches 0.76 at 100 + 100 · (0.76 − 0.74) / (0.78 − 0.74) = 150; uniform at 200
    assert speedup(UNIFORM, [(0, 0.70), (100, 0.74), (200, 0.78)]) == "1.33x"
    assert speedup(UNIFORM, [(0, 0.70), (200, 0.72), (400, 0.74)]) == "not reached (< 0.50x)"
    assert speedup([(0, 0.70), (100, 0.68)], [(0, 0.70), (200, 0.75)]) == \
        "reached at the warm start"


def test_speedup_in_iterations_leaves_the_probe_uncounted() -> None:
    # GVM spends twice the samples per iteration (its probe) and reaches uniform's final
    # accuracy in 1.5 iterations where uniform takes 2: 1.33x in iterations, 0.67x in samples
    gvm = [(0, 0.70), (200, 0.74), (400, 0.78)]
    assert by_iteration(gvm) == [(0, 0.70), (1, 0.74), (2, 0.78)]
    assert speedup(by_iteration(UNIFORM), by_iteration(gvm)) == "1.33x"
    assert speedup(UNIFORM, gvm) == "0.67x"


def test_mean_curve_averages_samples_and_accuracy_per_iteration() -> None:
    curve = mean_curve([[(0, 0.70), (100, 0.80)], [(0, 0.70), (300, 0.60)]])
    assert curve == [(0, pytest.approx(0.70)), (200, pytest.approx(0.70))]


def test_gvm_arms_are_valid_params_with_one_budget(tmp_path: Path) -> None:
    args = argparse.Namespace(threads=1, n_test=40, prompts=64, n=8, warmstart_steps=None,
                              set=["train.epochs=1"], iterations=2)
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    budgets = set()
    for arm, (preset, extra, reference) in ARMS.items():
        raw = preset_params(base, args, preset, 0, tmp_path, arm,
                            ("allocate.gvm.probe_n=4", *extra))
        path = tmp_path / f"{arm}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        cfg = load_params(path)
        assert list(cfg.iterations) == ["001", "002"]
        for key in cfg.iterations:
            it = cfg.for_iteration(key)
            budgets.add(it.allocate.budget)
            assert it.allocate.method == ("uniform" if reference is None else "gvm"), arm
            assert it.allocate.gvm.probe == ("reuse" if arm.endswith("-reuse") else "sample")
            assert it.allocate.gvm.probe_n == 4
            assert it.train.epochs == 1
        assert reference is None or reference in ARMS
    assert budgets == {64 * 8}


def test_claims_ton_arms_length_row_and_warm_starts(tmp_path) -> None:
    import json

    from claims import CLAIMS, estimate, levels_report, warm_start_groups

    assert warm_start_groups(["grpo", "ton", "grpo-think", "nft"]) == {
        (): ["grpo", "nft"],
        tuple(sorted({"verify.format": "think", "sample.max_new_tokens": 80,
                      "evaluate.max_new_tokens": 80,
                      "warmstart.thought_dropout": 0.5}.items())): ["ton"],
        tuple(sorted({"verify.format": "think", "sample.max_new_tokens": 80,
                      "evaluate.max_new_tokens": 80,
                      "warmstart.thought_dropout": 0.0}.items())): ["grpo-think"]}
    # Two seeds: TON's last-iteration lengths 30 and 20 against GRPO's 60 and 50.
    for seed, (ton, base) in enumerate([(30.0, 60.0), (20.0, 50.0)]):
        for arm, tokens in (("ton", ton), ("grpo-think", base)):
            run = tmp_path / f"seed-{seed}" / arm
            (run / "artifacts").mkdir(parents=True)
            (run / "params.yaml").write_text(yaml.safe_dump(
                {"iterations": {"001": {}}}))
            for folder, skip in (("base", 0.5), ("iter-001", 0.25 + 0.5 * seed)):
                (run / "artifacts" / folder).mkdir()
                (run / "artifacts" / folder / "metrics.json").write_text(json.dumps({
                    "mean_completion_tokens": tokens, "accuracy_difficulty_1": 0.5,
                    "mean_completion_tokens_difficulty_1": tokens,
                    "skip_ratio_difficulty_1": skip}))
    claim = next(c for c in CLAIMS if c.kind == "length")
    ours, detail = estimate(claim, tmp_path, [0, 1])
    assert ours.mean == pytest.approx(-55.0) and ours.se == pytest.approx(5.0)  # -50, -60 %
    assert detail == "-50.0 %, -60.0 %"
    lines = levels_report(tmp_path, [0, 1], ["ton"])
    assert lines[1].endswith("level 1:  50.0 ± 0.0 %,  25.0 ± 5.0 tokens; skip 0.50±0.00 0.50±0.25")
    assert (tmp_path / "ton_skip_ratio.png").read_bytes().startswith(b"\x89PNG")

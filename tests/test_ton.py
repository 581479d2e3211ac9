"""TON (specs/algorithms-b.md §3): the format, its reward, the worked example §3.8, the
thought-dropout warm start's targets, and the grader reading the <answer>."""

from __future__ import annotations

import random
import re
import time

import pytest

from cotflow.algorithms.ton import completion_stats, per_level, share, ton_rewards
from cotflow.data.arithmetic import generate_problems
from cotflow.data.targets import dropped, sft_targets, think_target
from cotflow.recipes.base import Inputs
from cotflow.recipes.ton import Settings, plan
from cotflow.rollouts import Rollout
from cotflow.verify.grade import CORRECT, INCORRECT, UNPARSEABLE, grade_answer
from cotflow.verify.think import (
    EMPTY_THOUGHT,
    FORMAT_PATTERN,
    answer_of,
    format_ok,
    skipped,
    thought_of,
)

# §3.8: a GeoQA group of four, gold 130.
O1 = "<think>\n\n</think><answer>130</answer>"
O2 = "<think>\n\n</think><answer>130</answer>"
O3 = "<think>\nThe angles sum to 180, so 180-50=130.\n</think><answer>130</answer>"
O4 = "<think>\nThe angles sum to 180, so 180-40=140.\n</think><answer>140</answer>"
TON = {"kind": "ton", "accuracy_weight": 1.0, "format_weight": 1.0, "advantage_std": "sample",
       "std_eps": 1e-4, "loss_agg": "seq-mean-token-mean", "loss_constant": None,
       "eps_low": 0.2, "eps_high": 0.2, "dual_clip": None, "kl_coef": 0.04,
       "reference": "base", "reward_incorrect": 0.0, "overlong_cache": 0,
       "drop_uniform_groups": False, "semantic_entropy": None}


def _accuracy(gold: str, completion: str) -> float:
    return 1.0 if grade_answer(gold, completion, "think").verdict == CORRECT else 0.0


def _rollout(i: int, text: str, reward: float, pid: str = "geoqa") -> Rollout:
    return Rollout(pid, i, "q", text, (1, 2), tuple(range(3, 3 + len(text))) + (2,), True,
                   reward, answer_of(text))


def test_empty_thought_is_the_exact_string():
    assert EMPTY_THOUGHT == "<think>" + "\n\n" + "</think>"
    assert O1.startswith(EMPTY_THOUGHT) and thought_of(O1) == "\n\n"


def test_worked_example_rewards_advantages_and_skip_ratio():
    group = [O1, O2, O3, O4]
    accuracy = [_accuracy("130", o) for o in group]
    assert accuracy == [1.0, 1.0, 1.0, 0.0]
    rewards = ton_rewards(accuracy, [format_ok(o) for o in group])
    assert rewards == [2.0, 2.0, 2.0, 1.0]
    # Through the recipe: GRPO with TRL's sample std + 1e-4; mean 1.75, std 0.5.
    rows = [_rollout(i, o, a) for i, (o, a) in enumerate(zip(group, accuracy, strict=True))]
    out = plan(Settings(**TON), Inputs(rows, {}, max_new_tokens=64, dedup=False,
                                       services=None))  # type: ignore[arg-type]
    assert [e.advantage for e in out.examples] == pytest.approx(
        [0.4999000] * 3 + [-1.4997001], abs=1e-7)
    assert out.stats["skip_ratio"] == 0.5 and out.stats["format_fraction"] == 1.0
    assert share([skipped(o) for o in group]) == 0.5
    assert out.reference == "base" and out.old


def test_no_tags_earns_at_most_one():
    # An <answer> without a thought: accuracy only (r = 1).
    bare = "<answer>130</answer>"
    assert ton_rewards([_accuracy("130", bare)], [format_ok(bare)]) == [1.0]
    # No tags at all, even with the right number: no answer to grade, no format.
    for text in ("130", "180-50=130\n\\boxed{130}", "<think>\n180-50=130\n</think>130"):
        assert ton_rewards([_accuracy("130", text)], [format_ok(text)])[0] <= 1.0


@pytest.mark.parametrize(("text", "ok"), [
    (O1, True),
    ("<think>\n\n</think> <answer>130</answer>", True),  # \s* between the tags
    ("<think>x</think>\n\t <answer>130</answer>", True),
    ("<think></think><answer></answer>", True),  # empty parts match .*?
    ("<think>a</think><answer>1</answer><answer>2</answer>", True),  # .*? spans tags
    ("<think>a</think>so<answer>130</answer>", False),  # text between the tags
    ("<think>a</think><answer>130</answer>\n", False),  # a full match: nothing after
    (" <think>a</think><answer>130</answer>", False),  # nor before
    ("<think>a<answer>130</answer>", False),  # thought never closed
    ("<think>a</think><answer>130", False),  # truncated
    ("<answer>130</answer>", False),
    ("<think></answer>", False),
    ("<think>a</think><answer></answer", False),
    ("<think></think><answer>", False),
    ("<think>a</think></think><answer>1</answer>", True),  # the second </think> fits
])
def test_format_edge_cases(text, ok):
    assert format_ok(text) is ok
    assert bool(re.fullmatch(FORMAT_PATTERN, text, re.DOTALL)) is ok


def test_format_check_agrees_with_the_regex_on_random_texts():
    rng = random.Random(0)
    pieces = ["<think>", "</think>", "<answer>", "</answer>", " ", "\n", "\u00a0", "7", "x",
              "<", ">", "/"]
    for _ in range(20_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 9)))
        if rng.random() < 0.5:
            text = "<think>" + text
        if rng.random() < 0.5:
            text += "</answer>"
        assert format_ok(text) is bool(re.fullmatch(FORMAT_PATTERN, text, re.DOTALL)), text


def test_format_check_is_linear_on_hostile_text():
    # The regex backtracks over every </think>…<answer> pair: quadratic.
    hostile = "<think>" + "</think> <answer>" * 50_000 + "x"
    t0 = time.perf_counter()
    assert not format_ok(hostile) and answer_of("<answer>" * 100_000) is None
    assert skipped("<think>" * 100_000) is False
    assert time.perf_counter() - t0 < 0.5


def test_answer_and_thought_extraction():
    assert answer_of("<think>\n1+2=3\n</think><answer> 3 </answer>") == "3"
    assert answer_of("<answer>1</answer><answer>2</answer>") == "1"  # the first, as re.search
    assert answer_of("<answer>12") is None and answer_of("12") is None
    assert thought_of("<think>abc</think>") == "abc" and thought_of("<think>abc") is None
    assert skipped("<think> \n </think><answer>1</answer>")
    assert not skipped("<answer>1</answer>")  # no thought is not an empty one
    assert not skipped(O3)


@pytest.mark.parametrize(("completion", "verdict"), [
    (O1, CORRECT),
    (O4, INCORRECT),
    ("<think>\n\n</think><answer>\\frac{260}{2}</answer>", CORRECT),  # math-verify
    ("<think>\n\n</think><answer>130}</answer>", UNPARSEABLE),  # "\boxed{130}}" reads 130
    ("<think>\n\n</think><answer></answer>", UNPARSEABLE),
    ("<think>\n\n</think><answer>130", UNPARSEABLE),  # truncated
    ("180-50=130\n\\boxed{130}", UNPARSEABLE),  # the boxed format is not read here
])
def test_grader_reads_the_answer_tag(completion, verdict):
    assert grade_answer("130", completion, "think").verdict == verdict


def test_boxed_grading_unchanged():
    assert grade_answer("130", "180-50=130\n\\boxed{130}").verdict == CORRECT
    assert grade_answer("130", O1).verdict == UNPARSEABLE


def test_step_check_reads_the_thought():
    from cotflow.config import VerifyConfig
    from cotflow.verify.pool import VerifierPool
    from cotflow.verify.scoring import rewards_of

    v = VerifyConfig(timeout_s=1.0, workers=0, memory_mb=1024, check_steps=True,
                     format="think")
    texts = ["<think>\n3+4=7\n7-2=5\n</think><answer>5</answer>",
             "<think>3+4=8\n8-2=5</think><answer>5</answer>",  # wrong step beside a tag
             "<think>\n\n</think><answer>5</answer>"]
    with VerifierPool(workers=0) as pool:
        _, rewards, wrong = rewards_of(v, pool, ["5"] * 3, texts)
    assert rewards == [1.0, 0.0, 1.0] and wrong == [False, True, False]


def test_targets_map_the_builtin_solutions():
    p = {"id": "a", "solution": "3+4=7\n7-2=5\n\\boxed{5}", "answer": "5"}
    assert think_target(p["solution"], "5", drop=False) == (
        "<think>\n3+4=7\n7-2=5\n</think><answer>5</answer>")
    assert think_target(p["solution"], "5", drop=True) == EMPTY_THOUGHT + "<answer>5</answer>"
    for problem in generate_problems(200, 0):
        for drop in (False, True):
            target = think_target(problem["solution"], problem["answer"], drop=drop)
            assert format_ok(target) and skipped(target) is drop
            assert grade_answer(problem["answer"], target, "think").verdict == CORRECT
    assert sft_targets([p], "boxed", dropout=0.0, seed=0) == [(p, p["solution"], False)]


def test_thought_dropout_is_static_per_seed_and_problem():
    problems = generate_problems(2000, 1)
    first = sft_targets(problems, "think", dropout=0.5, seed=3)
    again = sft_targets(list(reversed(problems)), "think", dropout=0.5, seed=3)
    assert {p["id"]: d for p, _, d in first} == {p["id"]: d for p, _, d in again}
    assert 0.46 < share([d for *_, d in first]) < 0.54
    other = sft_targets(problems, "think", dropout=0.5, seed=4)
    assert [d for *_, d in first] != [d for *_, d in other]
    assert not any(d for *_, d in sft_targets(problems, "think", dropout=0.0, seed=3))
    assert all(d for *_, d in sft_targets(problems, "think", dropout=1.0, seed=3))
    # Without dropout the two warm starts' targets differ only where a thought was dropped.
    plain = sft_targets(problems, "think", dropout=0.0, seed=3)
    assert [t for (_, t, d), (_, u, _) in zip(first, plain, strict=True) if not d] == [
        u for (_, u, _), (_, _, d) in zip(plain, first, strict=True) if not d]
    with pytest.raises(ValueError, match="dropout"):
        sft_targets(problems, "boxed", dropout=0.5, seed=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropped(0, "a", 1.5)


def test_stats_per_level():
    levels = [1, 1, 4, 4]
    assert per_level(levels, [1, 0, 1, 1], "accuracy") == {
        "accuracy_difficulty_1": 0.5, "accuracy_difficulty_4": 1.0}
    texts = [O1, O2, O3, O1]
    stats = completion_stats(levels, texts, [20, 24, 60, 64], think=True)
    assert stats == {"mean_completion_tokens": 42.0,
                     "mean_completion_tokens_difficulty_1": 22.0,
                     "mean_completion_tokens_difficulty_4": 62.0,
                     "skip_ratio": 0.75, "skip_ratio_difficulty_1": 1.0,
                     "skip_ratio_difficulty_4": 0.5, "format_fraction": 1.0}
    assert set(completion_stats([1], ["1+2=3\n\\boxed{3}"], [5], think=False)) == {
        "mean_completion_tokens", "mean_completion_tokens_difficulty_1"}
    with pytest.raises(ValueError, match="levels"):
        per_level([1], [1.0, 2.0], "x")


def test_config_ties_ton_to_its_format():
    import yaml

    from cotflow.config import ConfigError, _validate
    from tests.conftest import micro_params

    raw = micro_params()
    raw["iterations"] = {"001": {"algorithm": "ton", "prev": "base"}}
    with pytest.raises(ConfigError, match="needs verify.format: think"):
        _validate(yaml.safe_load(yaml.safe_dump(raw)), "p")
    raw["verify"]["format"] = "think"
    assert _validate(raw, "p").algorithm("001").kind == "ton"
    raw["warmstart"]["thought_dropout"] = 0.5
    raw["verify"]["format"] = "boxed"
    raw["iterations"] = {"001": {"algorithm": "grpo", "prev": "base"}}
    with pytest.raises(ConfigError, match="thought_dropout needs verify.format"):
        _validate(raw, "p")


def test_presets_set_their_warm_start(tmp_path):
    import yaml

    from cotflow.config import ConfigError, load_params
    from cotflow.presets import apply_preset
    from tests.conftest import MICRO

    params = tmp_path / "params.yaml"
    params.write_text(MICRO.read_text())
    shown = apply_preset(params, ["ton", "ton"])
    assert shown.startswith("# warm start: verify.format=think")
    cfg = load_params(params)
    assert (cfg.verify.format, cfg.warmstart.thought_dropout) == ("think", 0.5)
    assert cfg.sample.max_new_tokens == cfg.evaluate.max_new_tokens == 80
    assert [i.algorithm for i in cfg.iterations.values()] == ["ton", "ton"]
    assert cfg.for_iteration("002").allocate.n == 8
    text = params.read_text()
    assert "  format: think                 # boxed: the last" in text  # comment kept
    apply_preset(params, ["grpo-think"])
    base = load_params(params)
    assert (base.verify.format, base.warmstart.thought_dropout) == ("think", 0.0)
    assert base.algorithm("001") == cfg.algorithm("001")  # the same recipe and rewards
    # Only the dropout differs between the two pipelines' params.
    a, b = yaml.safe_load(text), yaml.safe_load(params.read_text())
    assert {k for k in a if a[k] != b[k]} == {"warmstart", "iterations"}
    assert {k for k in a["warmstart"] if a["warmstart"][k] != b["warmstart"][k]} == {
        "thought_dropout"}
    before = params.read_text()
    with pytest.raises(ConfigError, match="different warm starts"):
        apply_preset(params, ["ton", "grpo-think"])
    assert params.read_text() == before
    apply_preset(params, ["ton", "grpo"])  # grpo has no warm start of its own
    assert load_params(params).warmstart.thought_dropout == 0.5

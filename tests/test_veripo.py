"""VerIPO's verifier, pairs and pruning (specs/algorithms-b.md §4.4-4.5, worked example
§4.10), and the built-in task's exact consistency check."""

import random

import pytest

from cotflow.algorithms.veripo import (
    Flags,
    Pair,
    always_solved_to_drop,
    category,
    prompt_pairs,
    rates,
    reflection_text,
    repetitive,
)
from cotflow.data.arithmetic import answer_follows

# §4.10: one MCQ, ground truth B, 8 rollouts (answer, correct, consistent, repetitive,
# think tokens); positions here are the table's i − 1.
EXAMPLE = [("B", 1, 1, 0, 312), ("B", 1, 0, 0, 150), ("C", 0, 1, 0, 210), ("B", 1, 1, 0, 260),
           ("B", 1, 1, 1, 900), ("A", 0, 1, 0, 180), ("B", 1, 1, 0, 120), ("C", 0, 0, 0, 90)]
FLAGS = [Flags(bool(c), bool(k), bool(r), n) for _, c, k, r, n in EXAMPLE]
NO_BOUNDS = {"min_length": None, "max_length": None}


def test_worked_example_categories():
    cats = [category(f, **NO_BOUNDS) for f in FLAGS]
    assert [i + 1 for i, c in enumerate(cats) if c == "good"] == [1, 4, 7]
    assert [i + 1 for i, c in enumerate(cats) if c == "inconsistent"] == [2]
    assert [i + 1 for i, c in enumerate(cats) if c == "penalty"] == [5]
    assert [i + 1 for i, c in enumerate(cats) if c == "wrong"] == [3, 6, 8]


def test_worked_example_pairs():
    # The example's three types: consistency (1, 2); penalty (1, 5); reflection (3 → 1, 3).
    pairs = prompt_pairs(FLAGS, types=["consistency", "penalty", "reflection"], max_pairs=3,
                         rng=None, **NO_BOUNDS)
    assert pairs == [Pair("consistency", 0, 1), Pair("penalty", 0, 4),
                     Pair("reflection", 0, 2, wrong=2)]
    # r_a^avg = 5/8: not "simple", so the prompt stays for the next GRPO pass.
    assert rates(FLAGS)["accuracy"] == 5 / 8
    assert always_solved_to_drop({"q": 5 / 8}, share=0.8, seed=0) == set()


def test_pair_cap_order_and_fresh_rejected():
    every = ["consistency", "penalty", "accuracy", "reflection"]
    capped = prompt_pairs(FLAGS, types=every, max_pairs=2, rng=None, **NO_BOUNDS)
    assert [p.kind for p in capped] == ["consistency", "penalty"]
    both = prompt_pairs(FLAGS, types=["accuracy", "reflection"], max_pairs=2, rng=None,
                        **NO_BOUNDS)
    assert both == [Pair("accuracy", 0, 2), Pair("reflection", 0, 5, wrong=5)]
    drawn = prompt_pairs(FLAGS, types=["accuracy", "reflection"], max_pairs=2,
                         rng=random.Random(3), **NO_BOUNDS)
    assert {p.rejected for p in drawn} <= {2, 5, 7} and drawn[0].rejected != drawn[1].rejected


def test_no_good_rollout_no_pairs_and_unknown_is_not_good():
    bad = [f for f in FLAGS if not (f.correct and f.consistent and not f.repetitive)]
    assert prompt_pairs(bad, types=["accuracy"], max_pairs=2, rng=None, **NO_BOUNDS) == []
    unsure = [Flags(True, None, False, 300), Flags(False, True, False, 100)]
    assert category(unsure[0], **NO_BOUNDS) == "unknown"
    assert prompt_pairs(unsure, types=["accuracy"], max_pairs=2, rng=None, **NO_BOUNDS) == []
    assert rates(unsure)["unknown_consistency_rate"] == 1.0


def test_length_bounds_and_unfinished_are_penalties():
    assert category(FLAGS[0], min_length=None, max_length=300) == "penalty"  # 312 tokens
    assert category(FLAGS[6], min_length=121, max_length=None) == "penalty"  # 120 tokens
    assert category(Flags(True, True, False, 48, finished=False), **NO_BOUNDS) == "penalty"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown"):
        prompt_pairs(FLAGS, types=["bogus"], max_pairs=1, rng=None, **NO_BOUNDS)
    with pytest.raises(ValueError, match="max_pairs"):
        prompt_pairs(FLAGS, types=["accuracy"], max_pairs=0, rng=None, **NO_BOUNDS)
    with pytest.raises(ValueError, match="ngram"):
        repetitive([1], "x", ngram=0, max_count=3)


def test_repetition_rule():
    # A 20-token span three times (overlapping counts) is repetitive; twice is not.
    span = list(range(20))
    assert repetitive(span * 3, "", ngram=20, max_count=3)
    assert not repetitive(span * 2 + [99] * 5, "", ngram=20, max_count=3)
    assert repetitive([7] * 22, "", ngram=20, max_count=3)  # windows at 0, 1, 2
    assert not repetitive([7] * 21, "", ngram=20, max_count=3)
    # Sentences: lines, or text ending in . ! ? — three equal ones are repetitive.
    assert repetitive([], "Let me check. Let me check. Let me check.", ngram=20, max_count=3)
    assert repetitive([], "3+4=7\n3+4=7\n3+4=7\n\\boxed{7}", ngram=20, max_count=3)
    assert not repetitive([], "3+4=7\n3+4=7\n\\boxed{7}", ngram=20, max_count=3)


def test_reflection_composite():
    phrase = "Wait, let me re-check the video. That reasoning is wrong."
    wrong = "<think> The cup is left. </think><answer> C </answer>"
    good = "<think> The cup moves right. </think><answer> B </answer>"
    assert reflection_text(wrong, good, phrase) == (
        "<think> The cup is left. " + phrase + " The cup moves right. </think>"
        "<answer> B </answer>")
    # The built-in task, line by line: wrong steps, the phrase, the good steps and answer.
    assert reflection_text("3+5=8\n8-2=6\n\\boxed{6}", "3+4=7\n7-2=5\n\\boxed{5}",
                           "Wait, that is wrong.") == (
        "3+5=8\n8-2=6\nWait, that is wrong.\n3+4=7\n7-2=5\n\\boxed{5}")
    assert reflection_text("\\boxed{6}", "3+4=7\n\\boxed{7}", "No.") == "No.\n3+4=7\n\\boxed{7}"
    with pytest.raises(ValueError, match="phrase"):
        reflection_text(wrong, good, " ")


SOLUTION = "3+4=7\n7-2=5\n\\boxed{5}"


@pytest.mark.parametrize(("completion", "answer", "consistent"), [
    ("3+4=7\n7-2=5\n\\boxed{5}", "5", True),  # the task's steps, their result
    ("4+3=7\n7-2=5\n\\boxed{5}", "5", True),  # a sum's operands in either order
    ("3+4=7\n7-2=5\n\\boxed{6}", "6", False),  # right steps, wrong final answer
    ("3+5=8\n8-3=5\n\\boxed{5}", "5", False),  # right answer through wrong (true) steps
    ("3+4=8\n8-3=5\n\\boxed{5}", "5", False),  # right answer through a false step
    ("\\boxed{5}", "5", False),  # a right answer with no reasoning follows from nothing
    ("3+5=8\n8-2=6\n\\boxed{6}", "6", True),  # wrong steps, the answer they derive
    ("3+5=8\n8-2=6\n\\boxed{9}", "9", False),  # wrong steps, an answer they do not derive
    ("3+4=7\n7-2=5\n\\boxed{x}", None, False),  # no answer
    # TON's format: the thought is the working; the tags are not steps.
    ("<think>\n3+4=7\n7-2=5\n</think><answer>5</answer>", "5", True),
    ("<think>\n3+5=8\n8-3=5\n</think>\n<answer>5</answer>", "5", False),
    ("<think>\n\n</think><answer>5</answer>", "5", False),  # skipped: follows from nothing
])
def test_answer_follows_on_the_builtin_task(completion, answer, consistent):
    assert answer_follows(completion, SOLUTION, answer) is consistent


def test_answer_follows_refuses_a_solution_without_steps():
    with pytest.raises(ValueError, match="solution"):
        answer_follows("\\boxed{5}", "\\boxed{5}", "5")


def test_always_solved_share_dropped():
    acc = {f"p{i}": 1.0 for i in range(10)} | {"q": 0.5, "r": 0.0}
    dropped = always_solved_to_drop(acc, share=0.8, seed=1)
    assert len(dropped) == 8 and dropped <= {f"p{i}" for i in range(10)}
    assert dropped == always_solved_to_drop(dict(reversed(acc.items())), share=0.8, seed=1)
    assert always_solved_to_drop(acc, share=0.0, seed=1) == set()


def test_rates():
    r = rates(FLAGS)
    assert r["inconsistency_rate"] == 1 / 5  # rollout 2 of the five correct
    assert r["repetition_rate"] == 1 / 8
    assert r["mean_length"] == sum(n for *_, n in EXAMPLE) / 8


@pytest.mark.parametrize(("reply", "verdict"), [
    ("Consistent.", True), (" inconsistent: the steps give 6", False),
    ("The answer is CONSISTENT, not inconsistent", True),
    ("Inconsistent, though it looks consistent", False),
    ("3+4=7", None), ("consistently wrong", None), ("", None),
])
def test_lm_judge_reply_parsed_by_first_keyword(reply, verdict):
    from cotflow.algorithms.veripo import parse_consistency

    assert parse_consistency(reply) is verdict

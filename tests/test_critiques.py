"""Critique texts, the built-in task's step critic and the refinement-format examples
(specs/algorithms-a.md §3.2-3.3)."""

import random

import pytest

from cotflow.config import load_params
from cotflow.critiques import fill, indicative, indicative_gt, parse_critic
from cotflow.data.arithmetic import generate_problems, solution_steps
from cotflow.data.arithmetic_critic import step_critique, teaching_pairs, wrong_attempt
from tests.conftest import ROOT

SOLUTION = "16+15=31\n31-16=15\n\\boxed{15}"


def test_indicative_wordings():
    assert indicative(False, "paper") == "The generated solution is incorrect."
    assert indicative(True, "terse") == "Correct."
    assert indicative_gt(False, "15", "paper") == (
        "The generated solution is incorrect, the ground truth is 15.")
    assert indicative_gt(False, "15", "terse") == "Wrong; the answer is 15."
    with pytest.raises(ValueError, match="wording"):
        indicative(True, "long")


@pytest.mark.parametrize(("text", "parsed"), [
    ("Step 2 adds instead of subtracting.\nConclusion: wrong [END]",
     "Step 2 adds instead of subtracting."),
    (" Step 2: 31-16=15, not 17. [END]\n", "Step 2: 31-16=15, not 17."),
    ("Step 2 adds instead of subtracting.", None),  # no marker: unfinished or malformed
    ("Conclusion: wrong [END]", None),  # nothing said
    ("[END] then more text", None),
])
def test_lm_critic_output_needs_the_marker(text, parsed):
    assert parse_critic(text) == parsed


@pytest.mark.parametrize(("response", "critique"), [
    ("16+15=31\n31-14=17\n\\boxed{17}", "Step 2 should be 31-16=15: next is -16."),
    ("16+15=30\n30-16=14\n\\boxed{14}", "Step 1: 16+15=31, not 30."),
    ("16+15=31\n30-16=14\n\\boxed{14}", "Step 2 should be 31-16=15: step 1 gave 31."),
    ("16+15=31\n\\boxed{31}", "Step 2 is missing: 31-16=15."),
    ("sixteen and fifteen", "Step 1 should be 16+15=31."),
    ("16+15=31\n31-16=15\n\\boxed{16}", "Steps are right; the answer is \\boxed{15}."),
])
def test_step_critic_names_the_first_wrong_step(response, critique):
    assert step_critique(response, SOLUTION, "15") == critique


def test_wrong_attempts_are_wrong_and_the_critic_names_their_step():
    rng = random.Random(0)
    for p in generate_problems(300, 3):
        attempt = wrong_attempt(p["solution"], rng)
        got, want = solution_steps(attempt), solution_steps(p["solution"])
        assert attempt.rpartition("{")[2] != p["answer"] + "}", (p, attempt)
        first = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        assert step_critique(attempt, p["solution"], p["answer"]).startswith(
            f"Step {first + 1}"), (p["solution"], attempt)


def test_teaching_pairs_fit_the_tiny_models_context():
    """The longest refinement example of the default task (levels 1-5) with the default
    templates fits 256 positions; a refinement prompt with the longest question, a
    48-token previous attempt and the longest critique leaves the 48 new tokens."""
    cfg = load_params(ROOT / "params.yaml")
    c = cfg.critique
    problems = generate_problems(2000, 5)
    pairs = teaching_pairs(problems, 300, seed=0, refinement_template=c.refinement_template,
                           self_template=c.self_template, wording=c.wording)
    assert len(pairs) == 400
    refine = [p for p, t in pairs if p.endswith("Fix:\n")]
    assert len(refine) == 300 and sum("Check: Wrong.\n" in p for p in refine) == 100
    # <bos> + prompt + target + <eos>, one token per character
    assert max(len(p) + len(t) + 2 for p, t in pairs) <= cfg.model.max_position_embeddings
    question = max((p["question"] for p in problems), key=len)
    critique = max((step_critique(p, SOLUTION, "15") for p in ("", "1+1=3")), key=len)
    worst = fill(c.refinement_template, "t", question=question, previous="9" * 48,
                 critique=critique + "9" * 10)
    assert 1 + len(worst) + cfg.sample.max_new_tokens <= cfg.model.max_position_embeddings

"""SEED-GRPO on the spec's worked example (specs/algorithms-a.md §2.2, §2.6)."""

import math

import pytest

from cotflow.algorithms.seed import (
    cluster_answers,
    cluster_probabilities,
    seed_advantages,
    seed_scale,
    semantic_entropy,
)


def same(a: str, b: str) -> bool:
    return a == b


# §2.6, G = 4: (answers, rewards, p(C), SE rao, SE mc, reciprocal scale, Â, linear scale α = 1)
TABLE = [
    (["4", "4", "4", "5"], [1, 1, 1, 0], [0.75, 0.25], 0.562335, 0.836988, 0.983366,
     [0.245842] * 3 + [-0.737525], 0.594361),
    (["7", "3", "9", "3"], [1, 0, 0, 0], [0.25, 0.5, 0.25], 1.039721, 1.155245, 0.969673,
     [0.727255] + [-0.242418] * 3, 0.25),
    (["2", "2", "2", "2"], [0, 0, 0, 0], [1.0], 0.0, 0.0, 1.0, [0.0] * 4, 1.0),
]


@pytest.mark.parametrize(("answers", "rewards", "probs", "se_rao", "se_mc", "scale", "adv",
                          "linear"), TABLE)
def test_worked_example(answers, rewards, probs, se_rao, se_mc, scale, adv, linear):
    ids = cluster_answers(answers, same)
    p = cluster_probabilities(ids, weighting="frequency", logliks=None)
    assert p == pytest.approx(probs)
    rao = semantic_entropy(p, estimator="rao")
    assert rao == pytest.approx(se_rao, abs=1e-6)
    assert semantic_entropy(p, estimator="mc") == pytest.approx(se_mc, abs=1e-6)
    assert seed_scale(rao, 4, alpha=0.0417, f="reciprocal") == pytest.approx(scale, abs=1e-6)
    assert seed_scale(rao, 4, alpha=1.0, f="linear") == pytest.approx(linear, abs=1e-6)
    got = seed_advantages(rewards, ids, weighting="frequency", logliks=None, estimator="rao",
                          alpha=0.0417, f="reciprocal")
    assert got == pytest.approx(adv, abs=1e-6)


def test_se_over_ln_g_column():
    assert 0.562335 / math.log(4) == pytest.approx(0.405639, abs=1e-6)
    assert 1.039721 / math.log(4) == pytest.approx(0.75, abs=1e-6)


def test_probability_weighted_p1():
    ids = cluster_answers(["4", "4", "4", "5"], same)
    ll = [-0.30, -0.35, -0.40, -0.50]
    p = cluster_probabilities(ids, weighting="mean_token_prob", logliks=ll)
    assert p == pytest.approx([0.777204, 0.222796], abs=1e-6)
    rao = semantic_entropy(p, estimator="rao")
    assert rao == pytest.approx(0.530424, abs=1e-6)
    assert semantic_entropy(p, estimator="mc") == pytest.approx(0.876775, abs=1e-6)
    assert seed_scale(rao, 4, alpha=0.0417, f="reciprocal") == pytest.approx(0.984295, abs=1e-6)
    # seq_prob is the same arithmetic on sequence log-likelihoods; log-sum-exp keeps huge
    # magnitudes finite (exp(-3000) underflows to 0 in a direct sum).
    shifted = [x * 1e4 for x in ll]
    p_seq = cluster_probabilities(ids, weighting="seq_prob", logliks=shifted)
    assert p_seq == pytest.approx([1.0, math.exp(-1000.0)], abs=1e-12)
    assert sum(p_seq) == pytest.approx(1.0)


def test_cluster_answers_none_is_singleton_and_ids_follow_first_appearance():
    assert cluster_answers([None, "a", None, "b", "a"], same) == [0, 1, 2, 3, 1]
    assert cluster_answers([None, None], same) == [0, 1]
    assert cluster_answers([], same) == []


def test_cluster_answers_with_the_verifier():
    # Exact strings would split these into 3 clusters, inflating SE (spec §2.7).
    from cotflow.verify.grade import CORRECT, grade_extracted

    def verified(a: str, b: str) -> bool:
        return grade_extracted(a, b).verdict == CORRECT

    answers = ["1/2", "\\frac{1}{2}", "0.5", None, "2", "2.0"]
    assert cluster_answers(answers, verified) == [0, 0, 0, 1, 2, 2]
    assert cluster_answers(answers, same) == [0, 1, 2, 3, 4, 5]


def test_cluster_probabilities_sorted_ids():
    assert cluster_probabilities([2, 0, 2, 2], weighting="frequency", logliks=None) == [0.25, 0.75]


def test_scale_edges():
    assert seed_scale(0.7, 1, alpha=1.0, f="linear") == 1.0
    assert seed_scale(0.0, 8, alpha=0.0417, f="reciprocal") == 1.0
    # mc can exceed ln G; the linear form is floored at 0 rather than flipping signs
    assert seed_scale(2 * math.log(4), 4, alpha=1.0, f="linear") == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="'softmax'"):
        cluster_probabilities([0], weighting="softmax", logliks=None)
    with pytest.raises(ValueError, match="needs one log-likelihood per sample"):
        cluster_probabilities([0, 1], weighting="seq_prob", logliks=[-1.0])
    with pytest.raises(ValueError, match="'shannon'"):
        semantic_entropy([1.0], estimator="shannon")
    with pytest.raises(ValueError, match="sum to 1"):
        semantic_entropy([0.5, 0.4], estimator="rao")
    with pytest.raises(ValueError, match="every cluster mass > 0"):
        semantic_entropy([1.0, 0.0], estimator="mc")
    with pytest.raises(ValueError, match="'exp'"):
        seed_scale(0.1, 4, alpha=1.0, f="exp")
    with pytest.raises(ValueError, match="2 rewards but 1 cluster"):
        seed_advantages([1, 0], [0], weighting="frequency", logliks=None, estimator="rao",
                        alpha=0.0417, f="reciprocal")

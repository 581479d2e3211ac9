"""Evaluation metrics (pure python): pass@k, avg@k, maj@k over one problem's samples."""

from __future__ import annotations

from collections.abc import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, arXiv 2107.03374).

    1 - C(n-c, k) / C(n, k), computed as a product so it never overflows.
    """
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and k >= 1, got n={n} c={c} k={k}")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} exceeds the n={n} samples drawn")
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def avg_at_k(correct: Sequence[bool]) -> float:
    """avg@k: the mean correctness of one problem's k samples (the expected accuracy of a
    single sample, estimated from k)."""
    if not correct:
        raise ValueError("avg_at_k needs at least one sample")
    return sum(map(bool, correct)) / len(correct)


def majority_index(answers: Sequence[str | None]) -> int | None:
    """The index of the first sample whose answer won the vote over `answers` (one problem's
    k canonical answers; None: no answer, which does not vote), or None when none has one.

    A tie goes to the answer that appeared first: the rule must be fixed for maj@k to be
    reproducible, and the first occurrence needs no randomness.
    """
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is not None:
            counts[answer] = counts.get(answer, 0) + 1
            first.setdefault(answer, i)
    if not counts:
        return None
    # max keeps the first of equal counts, and dicts keep first-appearance order.
    return first[max(counts, key=counts.__getitem__)]


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """maj@k of one problem: whether the majority answer of its k samples is right, read
    off the verdict of the first sample that gave it (samples with one canonical answer get
    one verdict, but for math-verify's rounding credit on decimals). No answer is wrong.

    Args:
        answers: k canonical answers (None: nothing extracted). correct: k verdicts.
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} verdicts")
    winner = majority_index(answers)
    return winner is not None and bool(correct[winner])

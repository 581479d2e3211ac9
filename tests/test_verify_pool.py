"""Process-isolated grading: order, hard timeouts, crashes, limits, shutdown."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from cotflow.verify import pool as pool_module
from cotflow.verify.grade import (
    CORRECT,
    INCORRECT,
    TIMEOUT,
    UNPARSEABLE,
    Grade,
    grade_answer,
    triage,
)
from cotflow.verify.pool import VerifierPool

# Checked in-process: math-verify spends well over 20 s on this (9^(9^9) has ~370M digits).
SLOW = r"\boxed{9^{9^{9}}}"
PWNED = "/tmp/pwned_cotflow"

MIXED = [
    ("42", r"\boxed{42}"),
    ("0.5", r"\boxed{\frac{1}{2}}"),
    (r"2\sqrt{2}", r"\boxed{\sqrt{8}}"),
    ("7", "no box"),
    (r"\{1,2\}", r"\boxed{\{2,1\}}"),
    ("3", r"\boxed{4}"),
    (r"[0,1)", r"\boxed{(0,1]}"),
    ("5", r"\boxed{\frac{}{}}"),
    ("1,000", r"\boxed{1000}"),
    (r"\text{Monday}", r"\boxed{\text{Monday}}"),
]


@pytest.fixture(scope="module")
def pool() -> Iterator[VerifierPool]:
    with VerifierPool(workers=2, timeout_s=1.0) as p:
        p.grade_many([("1", r"\boxed{\frac{2}{2}}")] * 4)  # wait until workers are ready
        yield p


def _gone(pid: int, within_s: float = 5.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_order_preserved_and_matches_in_process(pool: VerifierPool) -> None:
    pairs = MIXED * 5
    expected = [grade_answer(g, c) for g, c in pairs]
    assert pool.grade_many(pairs) == expected
    assert pool.grade_many(list(reversed(pairs))) == list(reversed(expected))
    assert pool.grade_many([]) == []


def test_slow_input_times_out_and_later_items_graded(pool: VerifierPool) -> None:
    pairs = [("1", SLOW)] + MIXED
    start = time.monotonic()
    grades = pool.grade_many(pairs)
    elapsed = time.monotonic() - start
    assert grades[0].verdict == TIMEOUT and grades[0].extracted is None
    assert grades[1:] == [grade_answer(g, c) for g, c in MIXED]
    assert elapsed < pool.timeout_s + 1.0


def test_many_timeouts_replace_workers(pool: VerifierPool) -> None:
    before = set(pool.worker_pids())
    pairs = [("1", SLOW), ("2", SLOW), ("3", SLOW), ("0.5", r"\boxed{\frac{1}{2}}")]
    grades = pool.grade_many(pairs)
    assert [g.verdict for g in grades] == [TIMEOUT, TIMEOUT, TIMEOUT, CORRECT]
    assert not before & set(pool.worker_pids())
    assert all(_gone(pid) for pid in before)
    assert pool.grade_many(MIXED[:3]) == [grade_answer(g, c) for g, c in MIXED[:3]]


def test_worker_crash_gives_unparseable() -> None:
    with VerifierPool(workers=2, timeout_s=30.0) as p:
        p.grade_many([("1", r"\boxed{\frac{2}{2}}")] * 4)
        victims = p.worker_pids()

        def kill_later() -> None:
            time.sleep(0.5)
            for pid in victims:
                os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_later)
        killer.start()
        start = time.monotonic()
        grades = p.grade_many([("1", SLOW), ("2", SLOW), ("0.5", r"\boxed{\frac{1}{2}}")])
        killer.join()
        assert [g.verdict for g in grades] == [UNPARSEABLE, UNPARSEABLE, CORRECT]
        assert time.monotonic() - start < 10.0


def test_workers_have_memory_limit() -> None:
    with VerifierPool(workers=1, memory_mb=768) as p:
        p.grade_many([("1", r"\boxed{\frac{2}{2}}")])
        (pid,) = p.worker_pids()
        with open(f"/proc/{pid}/limits") as f:
            line = next(ln for ln in f if ln.startswith("Max address space"))
        assert line.split()[3:5] == [str(768 * 2**20)] * 2


def test_code_injection_not_executed(pool: VerifierPool) -> None:
    if os.path.exists(PWNED):
        os.remove(PWNED)
    pairs = [
        ("1", r"\boxed{__import__('os').system('touch /tmp/pwned_cotflow')}"),
        ("1", r"\boxed{exec(\"open('/tmp/pwned_cotflow', 'w')\")}"),
        ("1", r"\boxed{eval('__import__(\"os\").system(\"touch /tmp/pwned_cotflow\")')}"),
    ]
    verdicts = [g.verdict for g in pool.grade_many(pairs)]
    assert all(v in (UNPARSEABLE, INCORRECT) for v in verdicts)
    assert not os.path.exists(PWNED)


def test_shutdown_on_parent_exception() -> None:
    with pytest.raises(KeyError):
        with VerifierPool(workers=2) as p:
            p.grade_many(MIXED)
            pids = p.worker_pids()
            raise KeyError("boom")
    assert len(pids) == 2 and all(_gone(pid) for pid in pids)


def test_workers_zero_in_process() -> None:
    p = VerifierPool(workers=0)
    assert p.grade_many(MIXED) == [grade_answer(g, c) for g, c in MIXED]
    p.close()


def test_numeric_fast_path_throughput(pool: VerifierPool) -> None:
    pairs = [(str(i), f"... so \\boxed{{{i if i % 3 else i + 1}}}") for i in range(10_000)]
    start = time.monotonic()
    grades = pool.grade_many(pairs)
    assert time.monotonic() - start < 2.0
    assert [g.verdict for g in grades[:3]] == [INCORRECT, CORRECT, CORRECT]


def test_adversarial_corpus_is_contained(tmp_path) -> None:
    """Injections, power towers, 10k-deep nesting, megabyte answers, look-alikes, malformed
    LaTeX: nothing runs, each verdict comes within the hard limit from a memory-capped
    worker, and each is unparseable or timeout (a \\text{} answer is a string: incorrect)."""
    from tests.adversarial import CATEGORIES, corpus

    canary = tmp_path / "canary"
    items = corpus(canary)
    assert {cat for cat, _, _ in items} == set(CATEGORIES)
    with VerifierPool(workers=2, timeout_s=1.0, memory_mb=512) as p:
        p.grade_many([("1", r"\boxed{\frac{2}{2}}")] * 2)
        slowest = 0.0
        for cat, gold, completion in items:
            start = time.monotonic()
            (grade,) = p.grade_many([(gold, completion)])
            slowest = max(slowest, time.monotonic() - start)
            allowed = {UNPARSEABLE, TIMEOUT} | ({INCORRECT} if r"\text{" in completion else set())
            assert grade.verdict in allowed, (cat, completion[:80], grade)
        assert slowest < p.timeout_s + 0.5
        # All at once, as a stage grades them: same verdict kinds, bounded total time (each
        # timeout also costs a replacement worker's start; this box's 2 cores are shared).
        start = time.monotonic()
        grades = p.grade_many([(g, c) for _, g, c in items])
        timeouts = sum(g.verdict == TIMEOUT for g in grades)
        assert time.monotonic() - start < timeouts * (p.timeout_s + 0.5) + 5.0
        assert all(g.verdict in (UNPARSEABLE, TIMEOUT, INCORRECT) for g in grades)
    assert not canary.exists()


def test_adversarial_formats_are_contained(tmp_path) -> None:
    """The same limits hold in every answer format (tests/adversarial.py format_corpus)."""
    from cotflow.verify.extract import FORMATS
    from tests.adversarial import format_corpus

    canary = tmp_path / "canary"
    items = format_corpus(canary)
    assert {fmt for fmt, _, _ in items} == set(FORMATS) - {"boxed", "think"}
    with VerifierPool(workers=2, timeout_s=1.0, memory_mb=512) as p:
        p.grade_many([("1", r"\boxed{\frac{2}{2}}")] * 2)
        for fmt, gold, completion in items:
            start = time.monotonic()
            (grade,) = p.grade_many([(gold, completion)], fmt)
            # The limit, plus the parent's inline read of a megabyte on 2 shared cores.
            assert time.monotonic() - start < p.timeout_s + 1.0, (fmt, completion[:40])
            assert grade.verdict in (UNPARSEABLE, TIMEOUT, INCORRECT), (fmt, completion[:40])
    assert not canary.exists()


# Answers that need math-verify, so they travel to a worker (several per message).
WORKER_BOUND = [
    (r"2\sqrt{2}", r"\boxed{\sqrt{8}}"),
    (r"\{1,2\}", r"\boxed{\{2,1\}}"),
    (r"[0,1)", r"\boxed{(0,1]}"),
    ("5", r"\boxed{\frac{}{}}"),
    (r"x^2+1", r"\boxed{1+x^2}"),
    ("3", r"\boxed{x = 3}"),
]


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Indices of the answers in each message sent to a worker."""
    sent: list[list[int]] = []
    send = pool_module._Worker.send

    def spy(self: pool_module._Worker, batch: list[tuple[int, str, str]], timeout_s: float) -> None:
        sent.append([i for i, _, _ in batch])
        send(self, batch, timeout_s)

    monkeypatch.setattr(pool_module._Worker, "send", spy)
    return sent


def test_worker_bound_answers_leave_the_parent() -> None:
    assert not any(isinstance(triage(g, c), Grade) for g, c in WORKER_BOUND)


def test_hostile_answer_mid_batch_costs_only_itself(batches: list[list[int]]) -> None:
    pairs = WORKER_BOUND + [("1", SLOW)] + WORKER_BOUND * 3
    hostile = len(WORKER_BOUND)
    with VerifierPool(workers=1, timeout_s=1.0) as p:
        (first_pid,) = p.worker_pids()
        grades = p.grade_many(pairs)
        assert p.worker_pids() != [first_pid]  # the hung worker was replaced
    assert grades[hostile] == Grade(TIMEOUT, None)
    rest = pairs[:hostile] + pairs[hostile + 1:]
    assert grades[:hostile] + grades[hostile + 1:] == [grade_answer(g, c) for g, c in rest]
    # It was mid-batch: answers sent with it after it were graded again, on the new worker.
    (batch,) = [b for b in batches if hostile in b]
    behind = batch[batch.index(hostile) + 1:]
    assert batch.index(hostile) > 0 and behind
    assert any(set(behind) <= set(b) for b in batches[batches.index(batch) + 1:])


def test_two_hostile_answers_in_one_batch(batches: list[list[int]]) -> None:
    # Long enough that the first message holds both (a call's batches shrink as it ends).
    pairs = WORKER_BOUND[:3] + [("1", SLOW)] + WORKER_BOUND[:3] + [("2", SLOW)] + WORKER_BOUND * 5
    with VerifierPool(workers=1, timeout_s=1.0) as p:
        grades = p.grade_many(pairs)
    assert any({3, 7} <= set(b) for b in batches)
    assert [g.verdict for g in grades].count(TIMEOUT) == 2
    assert grades[3].verdict == grades[7].verdict == TIMEOUT
    others = [i for i in range(len(pairs)) if i not in (3, 7)]
    assert [grades[i] for i in others] == [grade_answer(*pairs[i]) for i in others]


def test_worker_crash_mid_batch_loses_only_that_answer(batches: list[list[int]]) -> None:
    pairs = WORKER_BOUND + [("1", SLOW)] + WORKER_BOUND * 3
    hostile = len(WORKER_BOUND)
    with VerifierPool(workers=1, timeout_s=60.0) as p:

        def kill_when_on_hostile() -> None:
            end = time.monotonic() + 60.0
            while time.monotonic() < end:
                for w in list(p._pool):
                    if w.queue and w.queue[0][0][0] == hostile:  # the worker is on it
                        time.sleep(0.2)
                        os.kill(w.proc.pid, signal.SIGKILL)
                        return
                time.sleep(0.01)

        killer = threading.Thread(target=kill_when_on_hostile)
        killer.start()
        grades = p.grade_many(pairs)
        killer.join()
    assert grades[hostile] == Grade(UNPARSEABLE, None)
    rest = pairs[:hostile] + pairs[hostile + 1:]
    assert grades[:hostile] + grades[hostile + 1:] == [grade_answer(g, c) for g, c in rest]
    assert any(hostile in b and b.index(hostile) < len(b) - 1 for b in batches)


def test_batches_spread_over_workers(batches: list[list[int]]) -> None:
    pairs = WORKER_BOUND * 20
    with VerifierPool(workers=2, timeout_s=30.0) as p:
        assert p.grade_many(pairs) == [grade_answer(g, c) for g, c in pairs]
    assert sorted(i for b in batches for i in b) == list(range(len(pairs)))  # each once
    assert max(map(len, batches)) > 1 and len(batches) >= 4

"""Hard time and memory limits for grading, by process isolation.

sympy can run for minutes or eat gigabytes on a crafted answer (``9^{9^{9}}``), and Python
cannot interrupt a running C-level bignum operation from another thread. So math-verify
runs in worker processes, each under ``RLIMIT_AS``, and the parent SIGKILLs any worker that
overruns its per-item deadline. Plain-number answers never leave the parent (``triage``).

A worker gets a batch of answers per message (one round trip per batch, not per answer)
and replies per answer as it goes, so the parent still holds every answer to its own
deadline: the clock of an answer starts when the one before it has been answered. When an
answer times out or kills its worker, it alone gets TIMEOUT or UNPARSEABLE; the answers
queued behind it go back to the queue, to a fresh worker, with fresh deadlines.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import resource
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from types import TracebackType

from cotflow.verify.grade import TIMEOUT, UNPARSEABLE, Grade, grade_answer, triage

__all__ = ["VerifierPool"]

_Item = tuple[int, str, str]  # (index in the grade_many call, gold, extracted answer)

_READY = "ready"
_STARTUP_TIMEOUT_S = 120.0  # a worker that cannot import math-verify in this long is broken
_JOIN_TIMEOUT_S = 2.0
# Answers per message: enough to amortise the round trip, few enough that the last batches
# of a call spread over all workers (see _batch_size) and a kill requeues little.
_MAX_BATCH = 16

# forkserver with math-verify preloaded and its parser warmed: replacements after a kill are
# a cheap fork, not a fresh interpreter importing sympy. Preloading only takes effect if
# this program has not started the (process-global) fork server yet; otherwise workers
# import on start-up (and warm up as they go).
_CTX = mp.get_context("forkserver")
_CTX.set_forkserver_preload(["cotflow.verify.preload"])


def _worker_main(conn: Connection, memory_mb: int) -> None:
    limit = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > limit:
        hard = limit  # lowering the hard limit too: graded code cannot raise it back
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

    from cotflow.verify.grade import grade_extracted, warm_up

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" notice
    warm_up()
    conn.send(_READY)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return  # parent went away
        if msg is None:
            return
        for seq, gold, pred in msg:
            g = grade_extracted(gold, pred)
            conn.send((seq, g.verdict, g.extracted))  # also tells the parent: next one starts


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(target=_worker_main, args=(child, memory_mb), daemon=True)
        self.proc.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        # (answer, seq) of the answers sent and not yet answered, in the order the worker
        # grades them; the first is being graded now.
        self.queue: deque[tuple[_Item, int]] = deque()
        self.seq = 0  # guards against a late reply being taken for another answer
        self.deadline = 0.0  # of queue[0]

    def send(self, batch: list[_Item], timeout_s: float) -> None:
        """Send answers to an idle worker (a busy one might not read: send could block)."""
        assert not self.queue
        msg = []
        for item in batch:
            self.seq += 1
            msg.append((self.seq, item[1], item[2]))
            self.queue.append((item, self.seq))
        try:
            self.conn.send(msg)
        except OSError:
            self.queue.clear()
            raise
        self.deadline = time.monotonic() + timeout_s  # clock starts only once it is sent

    def answered(self, seq: int, timeout_s: float) -> int | None:
        """Index of the answer a reply is for (None for a stale reply); starts the next clock."""
        if not self.queue or self.queue[0][1] != seq:
            return None
        (i, _, _), _ = self.queue.popleft()
        self.deadline = time.monotonic() + timeout_s
        return i

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(_JOIN_TIMEOUT_S)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(_JOIN_TIMEOUT_S)
        self.kill()


class VerifierPool:
    """Grade (gold, completion) pairs with a hard per-item time limit and memory cap.

    ``workers=0`` grades in-process, with no time or memory limit (debugging only).
    Use as a context manager, or call ``close()``.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 1.0, memory_mb: int = 1024) -> None:
        if workers < 0 or timeout_s <= 0 or memory_mb <= 0:
            raise ValueError("need workers >= 0, timeout_s > 0, memory_mb > 0")
        self.workers = workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._pool: list[_Worker] = []

    def __enter__(self) -> VerifierPool:
        """Start the workers and wait until they are ready, so the first call grades at once."""
        self._start()
        try:
            while not all(w.ready for w in self._pool):
                self._wait_once([], deque())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(self.memory_mb))

    def worker_pids(self) -> list[int]:
        """PIDs of the current worker processes (for monitoring)."""
        return [w.proc.pid for w in self._pool if w.proc.pid is not None]

    def close(self) -> None:
        pool, self._pool = self._pool, []
        for w in pool:
            if not w.queue and w.ready:
                w.stop()
            else:
                w.kill()

    def grade_many(self, pairs: Sequence[tuple[str, str]], fmt: str = "boxed") -> list[Grade]:
        """Grades of (gold, completion) pairs in input order, the answers read in format
        `fmt`. Items over ``timeout_s`` get TIMEOUT; crashes UNPARSEABLE."""
        results: list[Grade | None] = [None] * len(pairs)
        pending: deque[_Item] = deque()
        for i, (gold, completion) in enumerate(pairs):
            first = triage(gold, completion, fmt)
            if isinstance(first, Grade):
                results[i] = first
            else:
                pending.append((i, gold, first))
        if pending and self.workers == 0:
            for i, gold, _ in pending:
                results[i] = grade_answer(gold, pairs[i][1], fmt)
        elif pending:
            self._start()
            try:
                self._run(pending, results)
            except BaseException:
                self._discard_busy()  # their late replies would land in the next call
                raise
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _batch_size(self, pending: int) -> int:
        # A share of what is left per worker, so the tail of a call is spread over all of
        # them instead of queued behind one slow answer.
        return max(1, min(_MAX_BATCH, pending // (2 * self.workers)))

    def _run(self, pending: deque[_Item], results: list[Grade | None]) -> None:
        while pending or any(w.queue for w in self._pool):
            for w in self._pool:
                if w.ready and not w.queue and pending:
                    batch = [pending.popleft() for _ in range(self._batch_size(len(pending)))]
                    try:
                        w.send(batch, self.timeout_s)
                    except OSError:  # died while idle: not the answers' fault, retry them
                        pending.extendleft(reversed(batch))
                        self._replace(w)
            self._wait_once(results, pending)

    def _wait_once(self, results: list[Grade | None], pending: deque[_Item]) -> None:
        now = time.monotonic()
        due = [w.deadline for w in self._pool if w.queue]
        due += [w.started + _STARTUP_TIMEOUT_S for w in self._pool if not w.ready]
        handles = {w.conn: w for w in self._pool} | {w.proc.sentinel: w for w in self._pool}
        fired = wait(list(handles), timeout=max(0.0, min(due, default=now + 1.0) - now))
        woken = {id(handles[h]): handles[h] for h in fired}
        for w in woken.values():
            self._on_event(w, results, pending)
        now = time.monotonic()
        for w in list(self._pool):
            if not w.ready and now > w.started + _STARTUP_TIMEOUT_S:
                raise RuntimeError(f"verifier worker did not start in {_STARTUP_TIMEOUT_S}s")
            if w.queue and now >= w.deadline:
                self._fail_first(w, TIMEOUT, results, pending)

    def _on_event(self, w: _Worker, results: list[Grade | None], pending: deque[_Item]) -> None:
        try:
            while w.conn.poll():  # a late wake-up may find several replies waiting
                msg = w.conn.recv()
                if msg == _READY:
                    w.ready = True
                    continue
                seq, verdict, extracted = msg
                i = w.answered(seq, self.timeout_s)
                if i is not None:
                    results[i] = Grade(verdict, extracted)
        except (EOFError, OSError):
            pass
        if w.proc.is_alive():
            return  # replies taken, or a spurious wake-up
        if not w.ready:
            code = w.proc.exitcode
            raise RuntimeError(
                f"verifier worker died during start-up (exit code {code}); "
                f"is memory_mb={self.memory_mb} too small to import math-verify?"
            )
        # Crashed mid-answer (MemoryError, segfault, OOM kill): that answer is unparseable.
        self._fail_first(w, UNPARSEABLE, results, pending)

    def _fail_first(self, w: _Worker, verdict: str, results: list[Grade | None],
                    pending: deque[_Item]) -> None:
        """The answer a worker is on gets ``verdict``; the rest of its batch is requeued."""
        if w.queue:
            (i, _, _), _ = w.queue.popleft()
            results[i] = Grade(verdict, None)
            pending.extendleft(item for item, _ in reversed(w.queue))
            w.queue.clear()
        self._replace(w)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._pool[self._pool.index(w)] = _Worker(self.memory_mb)

    def _discard_busy(self) -> None:
        for w in list(self._pool):
            if w.queue:
                self._replace(w)

"""Hard time and memory limits for grading, by process isolation.

sympy can run for minutes or eat gigabytes on a crafted answer (``9^{9^{9}}``), and Python
cannot interrupt a running C-level bignum operation from another thread. So math-verify
runs in worker processes, each under ``RLIMIT_AS``, and the parent SIGKILLs any worker that
overruns its per-item deadline. Plain-number answers never leave the parent (``triage``).
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

_READY = "ready"
_STARTUP_TIMEOUT_S = 120.0  # a worker that cannot import math-verify in this long is broken
_JOIN_TIMEOUT_S = 2.0

# forkserver with math-verify preloaded: replacements after a kill are a cheap fork, not a
# fresh interpreter importing sympy. Preloading only takes effect if this program has not
# started the (process-global) fork server yet; otherwise workers import on start-up.
_CTX = mp.get_context("forkserver")
_CTX.set_forkserver_preload(["cotflow.verify.grade", "math_verify"])


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
        seq, gold, pred = msg
        g = grade_extracted(gold, pred)
        conn.send((seq, g.verdict, g.extracted))


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        self.conn, child = _CTX.Pipe()
        self.proc = _CTX.Process(target=_worker_main, args=(child, memory_mb), daemon=True)
        self.proc.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        self.item: int | None = None  # index in the current grade_many call
        self.seq = 0  # guards against a late reply being taken for the next item
        self.deadline = 0.0

    def send(self, item: int, gold: str, pred: str, timeout_s: float) -> None:
        self.seq += 1
        self.conn.send((self.seq, gold, pred))
        self.item = item
        self.deadline = time.monotonic() + timeout_s  # clock starts only once it is sent

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
        self._start()
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
            if w.item is None and w.ready:
                w.stop()
            else:
                w.kill()

    def grade_many(self, pairs: Sequence[tuple[str, str]]) -> list[Grade]:
        """Grades in input order. Items over ``timeout_s`` get TIMEOUT; crashes UNPARSEABLE."""
        results: list[Grade | None] = [None] * len(pairs)
        pending: deque[tuple[int, str, str]] = deque()
        for i, (gold, completion) in enumerate(pairs):
            first = triage(gold, completion)
            if isinstance(first, Grade):
                results[i] = first
            else:
                pending.append((i, gold, first))
        if pending and self.workers == 0:
            for i, gold, _ in pending:
                results[i] = grade_answer(gold, pairs[i][1])
        elif pending:
            self._start()
            try:
                self._run(pending, results)
            except BaseException:
                self._discard_busy()  # their late replies would land in the next call
                raise
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _run(self, pending: deque[tuple[int, str, str]], results: list[Grade | None]) -> None:
        while pending or any(w.item is not None for w in self._pool):
            for w in self._pool:
                if w.ready and w.item is None and pending:
                    i, gold, pred = pending.popleft()
                    try:
                        w.send(i, gold, pred, self.timeout_s)
                    except OSError:  # died while idle: not the item's fault, retry it
                        pending.appendleft((i, gold, pred))
                        self._replace(w)
            self._wait_once(results)

    def _wait_once(self, results: list[Grade | None]) -> None:
        now = time.monotonic()
        due = [w.deadline for w in self._pool if w.item is not None]
        due += [w.started + _STARTUP_TIMEOUT_S for w in self._pool if not w.ready]
        handles = {w.conn: w for w in self._pool} | {w.proc.sentinel: w for w in self._pool}
        fired = wait(list(handles), timeout=max(0.0, min(due, default=now + 1.0) - now))
        woken = {id(handles[h]): handles[h] for h in fired}
        for w in woken.values():
            self._on_event(w, results)
        now = time.monotonic()
        for w in list(self._pool):
            if not w.ready and now > w.started + _STARTUP_TIMEOUT_S:
                raise RuntimeError(f"verifier worker did not start in {_STARTUP_TIMEOUT_S}s")
            if w.item is not None and now >= w.deadline:
                results[w.item] = Grade(TIMEOUT, None)
                self._replace(w)

    def _on_event(self, w: _Worker, results: list[Grade | None]) -> None:
        try:
            msg = w.conn.recv() if w.conn.poll() else None
        except (EOFError, OSError):
            msg = None
        if msg is None:
            if w.proc.is_alive():
                return  # spurious wake-up
            if not w.ready:
                code = w.proc.exitcode
                raise RuntimeError(
                    f"verifier worker died during start-up (exit code {code}); "
                    f"is memory_mb={self.memory_mb} too small to import math-verify?"
                )
            if w.item is not None:  # crashed mid-item: MemoryError, segfault, OOM kill
                results[w.item] = Grade(UNPARSEABLE, None)
            self._replace(w)
        elif msg == _READY:
            w.ready = True
        else:
            seq, verdict, extracted = msg
            if w.item is not None and seq == w.seq:
                results[w.item] = Grade(verdict, extracted)
                w.item = None

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._pool[self._pool.index(w)] = _Worker(self.memory_mb)

    def _discard_busy(self) -> None:
        for w in list(self._pool):
            if w.item is not None:
                self._replace(w)

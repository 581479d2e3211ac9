"""Progress of an optimizer loop as it runs: a log line at a steady rate, a bar on a terminal.

Lines go through `logging`, so they reach the stage's log file and, from there, Prefect
(flows/pipeline.py). A line is due at the first step, at each `parts`-th of the total
(round step numbers), whenever `interval_s` passed since the last one, and at the end;
the numbers come from cotflow/progress.py.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from types import TracebackType

from cotflow.progress import estimate, progress_line


class ProgressLog:
    def __init__(self, label: str, total: int, *, logger: logging.Logger, start: int = 0,
                 interval_s: float = 20.0, parts: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.logger, self.start = label, total, logger, start
        self.interval_s, self.clock = interval_s, clock
        self.every = max(1, math.ceil(total / parts))
        self.done = self.logged_at = start
        self.tokens = 0
        self._losses: list[float] = []  # since the last line: its loss is their mean
        self._stack = ExitStack()
        self._bar = None

    def __enter__(self) -> ProgressLog:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.t0 = self.last_line = self.clock()
        # disable=None: a bar only where stderr is a terminal; logs get the lines alone.
        bar = tqdm(total=self.total, initial=self.start, desc=self.label, unit="step",
                   disable=None, leave=False, mininterval=1, file=sys.stderr)
        self._stack.callback(bar.close)
        if not bar.disable:
            self._bar = bar
            # The console's log lines print above the bar instead of through it.
            self._stack.enter_context(logging_redirect_tqdm())
        return self

    def step(self, loss: float, tokens: int) -> None:
        """One optimizer step done, with its loss and the tokens it processed."""
        self.done += 1
        self.tokens += tokens
        self._losses.append(loss)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)  # drawn by update
            self._bar.update(1)
        now = self.clock()
        if (self.done == self.start + 1 or self.done >= self.total
                or self.done // self.every > self.logged_at // self.every
                or now - self.last_line >= self.interval_s):
            self._line(now)

    def _line(self, now: float) -> None:
        loss = sum(self._losses) / len(self._losses) if self._losses else None
        est = estimate(self.done, self.total, now - self.t0, self.tokens, start=self.start)
        self.logger.info("%s", progress_line(self.label, self.done, self.total, loss, est))
        self._losses.clear()
        self.logged_at, self.last_line = self.done, now

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.close()
        if kind is None and self.done > self.logged_at:  # a loop cut short of its total
            self._line(self.clock())

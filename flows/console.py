"""Prefect's console without tracebacks, so that a failed `cotflow run` ends in one line
naming the cause (cli.py). The traces stay in each stage's log and in what Prefect's API
and UI get; COTFLOW_DEBUG=1 leaves the console as Prefect has it."""

from __future__ import annotations

import logging


class _NoTraceback(logging.Formatter):
    """Another formatter's lines without the exception or stack they carry."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        # The record goes on to other handlers (Prefect's API): hide the trace from this
        # one only.
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_tracebacks() -> None:
    """Drop tracebacks from Prefect's console handler (root logger, logging.yml)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(
                handler.formatter, _NoTraceback):
            handler.setFormatter(_NoTraceback(handler.formatter or logging.Formatter()))

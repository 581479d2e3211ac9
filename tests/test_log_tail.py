"""LogTail forwards a log file's lines while it is written: in order, none lost or doubled.

The writers wait for each line to come through before writing the next (with a generous
bound), so a tail that only read at the end would fail here rather than be slow."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cotflow.log_tail import LogTail
from cotflow.stage_errors import trace_header
from flows.pipeline import _forwarder

BOUND_S = 60.0  # a generous bound on one line's way through the tail


class Received:
    """The lines the tail emitted, and a wait for the n-th."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def wait_for(self, n: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.lines) >= n, BOUND_S), self.lines


def handler(path: Path) -> logging.FileHandler:
    """What a stage logs through (tasks/common.py): a file opened with mode 'w'."""
    h = logging.FileHandler(path, mode="w")
    h.setFormatter(logging.Formatter("%(message)s"))
    return h


def write_live(path: Path, got: Received, lines: list[str], *, first: int = 0) -> None:
    """Log `lines` to `path`, each only after the one before came through."""
    h = handler(path)
    try:
        for i, line in enumerate(lines):
            h.emit(logging.makeLogRecord({"msg": line}))
            got.wait_for(first + i + 1)
    finally:
        h.close()


def test_lines_arrive_while_written_over_a_stale_file(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    path.write_text("stale 1\nstale 2\nstale 3\n")  # an earlier run's log
    got = Received()
    lines = [f"line {i} 100% %s" for i in range(50)]
    with LogTail(path, got, poll_s=0.01) as tail:
        writer = threading.Thread(target=write_live, args=(path, got, lines))
        writer.start()
        writer.join(BOUND_S * 2)
    assert tail.started
    assert got.lines == lines


def test_a_file_that_appears_and_is_rewritten_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "data.log"
    path.parent.mkdir()
    got = Received()
    with LogTail(path, got, poll_s=0.01):
        write_live(path, got, ["first run, a long line", "first run, another"])
        write_live(path, got, ["again"], first=2)  # shorter: read from the start again
    assert got.lines == ["first run, a long line", "first run, another", "again"]


def test_a_process_writing_and_the_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "sample.log"
    path.write_text("stale\n" * 1000)
    got = Received()
    script = ("import sys\n"
              "with open(sys.argv[1], 'w') as f:\n"
              "    for i in range(2000):\n"
              "        f.write(f'row {i}\\n'); f.flush()\n"
              "    f.write('no newline')\n")
    with LogTail(path, got, poll_s=0.001):
        subprocess.run([sys.executable, "-c", script, str(path)], check=True,
                       timeout=BOUND_S)
    assert got.lines == [f"row {i}" for i in range(2000)] + ["no newline"]


def test_an_untouched_file_is_not_forwarded_and_the_thread_stops_on_error(
        tmp_path: Path) -> None:
    path = tmp_path / "evaluate.log"
    path.write_text("stale\n")
    got = Received()
    with pytest.raises(RuntimeError, match="stage failed"), \
            LogTail(path, got, poll_s=0.01) as tail:
        raise RuntimeError("stage failed")
    assert not tail.started and got.lines == []
    assert not any(t.name == "tail evaluate.log" for t in threading.enumerate())


def test_forwarder_keeps_the_trace_in_the_file(tmp_path: Path) -> None:
    got = Received()
    forward = _forwarder(got, "train@002", tmp_path / "train.log")
    header = trace_header("train")
    for line in ("loading", header, "Traceback (most recent call last):", "ValueError: x"):
        forward(line)
    assert got.lines == ["loading", f"{header} trace in {tmp_path / 'train.log'}"]


def test_a_failed_log_restored_by_dvc_says_its_failure_is_old(tmp_path: Path) -> None:
    from flows.pipeline import _mark_stale_failure

    log = tmp_path / "train.log"
    log.write_text(f"step 1\n{trace_header('train')}\nTraceback ...\nValueError: x\n")
    _mark_stale_failure(log, "train@002")
    _mark_stale_failure(log, "train@002")  # a second no-op run: the note once
    lines = log.read_text().splitlines()
    assert lines[-1].endswith("train@002 is up to date now (its outputs restored by DVC): "
                              "the failure above is of an earlier attempt")
    assert len(lines) == 5
    clean = tmp_path / "evaluate.log"
    clean.write_text("done\n")
    _mark_stale_failure(clean, "evaluate@002")
    _mark_stale_failure(tmp_path / "missing.log", "sample@001")
    assert clean.read_text() == "done\n" and not (tmp_path / "missing.log").exists()

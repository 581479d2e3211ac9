"""Forward the lines another process writes to a log file while a block of code runs.

`LogTail(path, emit)` polls `path` in a background thread and hands `emit` each complete
line as it appears; on leaving the block it stops the thread and flushes the rest, the last
line even without its newline. A file there before the block is someone else's (an earlier
run's) until it changes: only then is it read, from its start. A file that is rewritten
from the start (shorter than what was read, or another inode) is read again from its start.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

Signature = tuple[int, int, int]  # inode, mtime (ns), size


def _signature(path: Path) -> Signature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class LogTail:
    def __init__(self, path: Path, emit: Callable[[str], None], *, poll_s: float = 0.5,
                 stop_timeout_s: float = 60.0) -> None:
        self.path, self.emit, self.poll_s, self.stop_timeout_s = path, emit, poll_s, stop_timeout_s
        self.started = False  # the file was written since the block began
        self._inode: int | None = None
        self._pos = 0
        self._partial = b""
        self._lock = threading.Lock()  # one reader at a time: the thread or the last flush
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LogTail:
        self._before = _signature(self.path)
        # emit runs in the caller's context: Prefect finds its run context there.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._follow,),
                                        name=f"tail {self.path.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout_s)
        self._read(final=True)

    def _follow(self) -> None:
        while not self._stop.is_set():
            self._read(final=False)
            self._stop.wait(self.poll_s)

    def _read(self, *, final: bool) -> None:
        with self._lock:
            if not self.started:
                now = _signature(self.path)
                if now is None or now == self._before:
                    return
                self.started = True
            try:
                with open(self.path, "rb") as f:
                    st = os.fstat(f.fileno())
                    if st.st_ino != self._inode or st.st_size < self._pos:  # (re)written
                        self._inode, self._pos, self._partial = st.st_ino, 0, b""
                    f.seek(self._pos)
                    data = f.read()
            except OSError:  # gone for now (being replaced): the next read finds it
                return
            self._pos += len(data)
            *lines, self._partial = (self._partial + data).split(b"\n")
            if final and self._partial:
                lines, self._partial = [*lines, self._partial], b""
            for line in lines:
                self.emit(line.decode("utf-8", errors="replace"))

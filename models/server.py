"""A managed OpenAI-compatible server: start a command on a checkpoint, wait until it answers,
stop it with its whole process group.

Generic on purpose: the command is an argv template (params `serving.launch.command`), so
the same launcher runs `vllm serve` from vLLM's own environment on a GPU node and
`transformers serve` in the tests here. The server runs in a session of its own, so stopping
it takes down the workers it forked (vLLM starts one per GPU); if the stage process dies
without cleaning up, the kernel sends the server SIGTERM (PR_SET_PDEATHSIG). That signal
follows the *thread* that started the server: start it from one that outlives it.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """The managed server did not start or stopped answering; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def render_command(template: str, values: dict[str, Any]) -> list[str]:
    """The argv of `template` with {placeholders} filled. Split first, then format each
    word, so a path with spaces stays one argument and nothing passes through a shell."""
    argv = []
    for word in shlex.split(template):
        try:
            argv.append(word.format(**values))
        except KeyError as err:
            raise ValueError(f"serving.launch.command: unknown placeholder {{{err.args[0]}}} "
                             f"(have {', '.join(sorted(values))})") from None
    return argv


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:  # not Linux: cleanup then relies on stop()
        pass


class ManagedServer:
    """`with ManagedServer(argv, host, port, ...) as base_url:` -> 'http://host:port/v1'."""

    def __init__(self, argv: list[str], *, host: str, port: int, startup_timeout_s: float,
                 log_path: Path, health_path: str = "/health",
                 env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.env = env
        self.root = f"http://{host}:{port}"
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.health_path = health_path
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    def __enter__(self) -> str:
        self.start()
        return self.base_url

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("starting server: %s (log: %s)", shlex.join(self.argv), self.log_path)
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as out:
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, env=self.env,
                                             preexec_fn=_die_with_parent)
            except OSError as err:
                raise ServerError(f"cannot start {self.argv[0]!r}: {err} (set "
                                  "serving.launch.command to the server in its own "
                                  "environment, e.g. /opt/vllm/bin/vllm serve ...)") from None
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0
        log.info("server ready at %s after %.1f s", self.root, self.startup_s)

    def _wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with code {self.proc.returncode} before it "
                                  f"answered; last lines of {self.log_path}:\n{self.tail()}")
            try:
                if httpx.get(self.root + self.health_path, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"server did not answer {self.root}{self.health_path} within "
                                  f"{self.startup_timeout_s:.0f} s (serving.launch."
                                  f"startup_timeout_s); last lines of {self.log_path}:\n"
                                  f"{self.tail()}")
            time.sleep(0.5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left after `grace_s`."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; its forked workers may not be: one more signal for them.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        log.info("server %s stopped", self.root)


def launch_values(launch: Any, *, model: Path, host: str, port: int, seed: int) -> dict[str, Any]:
    """Placeholder values for `serving.launch.command` (scale_config.LAUNCH_FIELDS)."""
    return {"python": sys.executable, "model": str(model), "host": host, "port": port,
            "seed": seed, "tensor_parallel_size": launch.tensor_parallel_size,
            "data_parallel_size": launch.data_parallel_size,
            "gpu_memory_utilization": launch.gpu_memory_utilization}

"""A warm start for the stages of one `cotflow run`: a process that has imported the heavy
libraries (torch, transformers, pyarrow, ...) once and forks a child for each stage command.

DVC still runs every stage as its command, `python -m cotflow stage NAME --iteration K`;
under `cotflow run` that command (the client) hands its arguments, working directory,
environment and standard streams to this server and waits. The server forks; the child
joins the client's process group (a kill of the group takes it too), imports the project's
code from disk, as a fresh process would, and runs the stage; its exit status becomes the
client's. So a stage costs a fork instead of a Python start plus seconds of imports, and
`dvc repro` (no server) runs the very same code the usual way.

Only third-party libraries are preloaded, never the project's modules: those are DVC deps,
and a stage must run them as they are on disk. A client whose environment differs from the
server's (but for what DVC or a shell set per command) runs the stage itself, since the
preloaded libraries read some variables when imported.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

ENV = "COTFLOW_STAGE_SERVER"  # the server's socket, for the stage commands of this run
# What a stage imports that costs seconds and is not project code (dvc.yaml deps).
PRELOAD = ("torch", "transformers", "transformers.modeling_utils",
           "transformers.generation", "transformers.models.llama.modeling_llama",
           "safetensors.torch", "tokenizers", "pyarrow", "pyarrow.parquet", "pandas",
           "numpy", "pydantic", "yaml", "matplotlib", "matplotlib.figure", "sympy",
           "math_verify")
# Variables no preloaded library reads on import: set per command by DVC (DVC_ROOT,
# DVC_STAGE), the shell it runs the command with or a terminal, or read at run time by
# cotflow, Prefect and MLflow only.
PER_COMMAND_PREFIXES = ("DVC_", "COTFLOW_", "PREFECT_", "MLFLOW_")
PER_COMMAND = frozenset({"SHLVL", "_", "PWD", "OLDPWD", "LINES", "COLUMNS"})


def _comparable(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items()
            if k not in PER_COMMAND and not k.startswith(PER_COMMAND_PREFIXES)}


@contextmanager
def stage_server(root: Path) -> Iterator[None]:
    """Run a stage server for the stage commands started in this block (they find it
    through ENV); a no-op where one is already up or fork is missing."""
    if os.environ.get(ENV) or not hasattr(os, "fork") or not hasattr(socket, "AF_UNIX"):
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="cotflow-stages-"))
    path = folder / "socket"
    # The server exits once this pipe closes (this process ended, however it ended) and
    # its running stages are done.
    alive_r, alive_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "cotflow.stage_server", str(path),
                             str(alive_r)], cwd=root, pass_fds=(alive_r,))
    os.close(alive_r)
    # Bound within a Python start; only then may stage commands look for it (its imports
    # come after, and a command that connects meanwhile waits for them).
    deadline = time.monotonic() + 60
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if path.exists():
        os.environ[ENV] = str(path)
    try:
        yield
    finally:
        os.environ.pop(ENV, None)
        os.close(alive_w)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        path.unlink(missing_ok=True)
        folder.rmdir()


def run_stage_in_server(argv: list[str]) -> int | None:
    """Run `cotflow ARGV` in a child of this run's stage server and return its exit code;
    None where there is no server or it declined (the caller then runs the stage itself)."""
    path = os.environ.get(ENV)
    if not path:
        return None
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError:
        return None
    with conn:
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                   "pgid": os.getpgrp(), "sid": os.getsid(0)}
        # One line (JSON escapes newlines), the standard streams riding along with it; the
        # connection then stays open: the server takes its closing for this process's end.
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        reply = conn.makefile("r")
        started = json.loads(reply.readline() or "{}")
        if "pid" not in started:
            return None  # declined: nothing ran
        child = started["pid"]

        def forward(signum: int, _frame: object) -> None:
            os.kill(child, signum)  # Ctrl-C, a TERM from DVC or Prefect: the stage gets it

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        line = reply.readline()
    if not line:
        return 1  # the server went away without a status (it was killed)
    status = json.loads(line)["status"]
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)  # die as the stage died, so DVC reports the same
    return os.waitstatus_to_exitcode(status)


def _receive(conn: socket.socket) -> tuple[dict | None, list[int]]:
    chunks: list[bytes] = []
    fds: list[int] = []
    while not chunks or not chunks[-1].endswith(b"\n"):
        data, got, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        fds += got
        if not data:
            return None, fds  # the client left before asking
        chunks.append(data)
    return json.loads(b"".join(chunks)), fds


def _serve(path: str, alive: int) -> list[str] | None:
    """The server's loop. Returns None in the server when it is done, and in each forked
    child the arguments of the stage command it is to run."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)  # before the imports: early clients wait for them, not fail
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the stages themselves
    import importlib

    before = dict(os.environ)
    for name in PRELOAD:
        # One that fails here fails in the stage that needs it, with the stage's message.
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    # What the imports set themselves (torch: TORCHINDUCTOR_CACHE_DIR), as they would in a
    # stage process of their own.
    preset = {k: v for k, v in os.environ.items() if k not in before}
    own_env = _comparable(before)
    running: dict[int, socket.socket] = {}
    closing = False
    while running or not closing:
        watch = [*running.values()] + ([] if closing else [listener, alive])
        ready, _, _ = select.select(watch, [], [], 0.05)
        if alive in ready and not os.read(alive, 1):
            closing = True
            listener.close()
        if not closing and listener in ready:
            conn, _ = listener.accept()
            request, fds = _receive(conn)
            # Declined: another environment, or another session (its stage could not join
            # the client's process group, so a kill of that group would miss it).
            if (request is None or _comparable(request["env"]) != own_env or len(fds) != 3
                    or request["sid"] != os.getsid(0)):
                with contextlib.suppress(OSError):
                    conn.sendall(b'{"declined": true}\n')
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:
                for sock in (listener, conn, *running.values()):
                    sock.close()
                os.close(alive)
                return _become(request, fds, preset)
            for fd in fds:
                os.close(fd)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            running[pid] = conn
        for pid, conn in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"status": status}).encode() + b"\n")
                conn.close()
                del running[pid]
            elif conn in ready:  # the client is gone (killed): so goes its stage
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    return None


def _become(request: dict, fds: list[int], preset: dict[str, str]) -> list[str]:
    """In the forked child: take on the client's group, streams, directory, environment."""
    os.setpgid(0, request["pgid"])  # same session (checked): a kill of the group takes it
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**preset, **{k: v for k, v in request["env"].items() if k != ENV}})
    # Streams were opened on the server's descriptors 0-2 before dup2: reopen, unbuffered
    # state dropped, so the stage writes where the client's output goes.
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own stream
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    sys.argv = [str(Path(request["cwd"]) / "cotflow" / "__main__.py"), *request["argv"]]
    return request["argv"]


def _run_child(argv: list[str]) -> NoReturn:
    """Run the stage command and end this process as Python ends one, but for tearing down
    every object: in a fork that writes to every page shared with the server (seconds)."""
    sys.path[0] = os.getcwd()  # as `python -m cotflow` from the stage's directory has it
    try:
        from cotflow.cli import main as cli_main

        code = cli_main(argv)
    except SystemExit as stop:
        code = stop.code
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught one
        traceback.print_exc()
        code = 1
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    # What interpreter exit does that matters (multiprocessing's forked children do the
    # same): join non-daemon threads, run atexit (logging.shutdown, the verifier pool's
    # cleanup), flush the standard streams.
    getattr(threading, "_shutdown", lambda: None)()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if code < 0:  # died of a signal, as an uncaught KeyboardInterrupt makes Python do
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code & 0xFF)


def main() -> int:
    argv = _serve(sys.argv[1], int(sys.argv[2]))
    if argv is None:
        return 0
    _run_child(argv)


if __name__ == "__main__":
    sys.exit(main())

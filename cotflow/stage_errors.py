"""How a stage's failure reaches `cotflow run` as one line, and whether it is worth a retry.

The stage command (cli.py) leaves its one-line cause, and whether it will recur, in the file
that COTFLOW_STAGE_ERROR names. The flow's task around DVC (flows/pipeline.py) reads it and
fails with "data failed: <cause>" rather than DVC's "failed to reproduce 'data'", and
Prefect skips the retry of a failure that will recur. The stage's traceback stays in its
log, below `trace_header`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "COTFLOW_STAGE_ERROR"


def trace_header(stage: str) -> str:
    """The line of a stage's log above its traceback."""
    return f"stage {stage} failed:"


def recurs(err: BaseException) -> bool:
    """Bad input (ValueError and its kin: ConfigError, DataError, PolicyError, RecordError)
    fails the same way until someone changes it; another error (a server gone, memory, an
    injected fault) may pass on a retry."""
    return isinstance(err, ValueError)


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def leave(err: BaseException) -> None:
    """In a stage command that failed: tell the flow that started it why (a no-op
    elsewhere)."""
    path = os.environ.get(ENV)
    if path:
        Path(path).write_text(json.dumps({"cause": one_line(str(err)), "recurs": recurs(err)}))


class StageFailed(RuntimeError):
    """A DVC stage failed; the message is the stage's own cause, on one line."""

    def __init__(self, stage: str, cause: str, *, recurs: bool) -> None:
        super().__init__(f"{stage} failed: {cause}")
        self.recurs = recurs


@contextmanager
def stage_failure(stage: str) -> Iterator[None]:
    """Around DVC reproducing `stage`: its failure becomes StageFailed with the cause the
    stage left, or DVC's own where it left none (killed, or refused by DVC itself)."""
    fd, name = tempfile.mkstemp(prefix="cotflow-stage-error-")
    os.close(fd)
    os.environ[ENV] = name  # DVC passes it to the stage's command
    try:
        yield
    except Exception as err:
        left = Path(name).read_text()
        if left:
            report = json.loads(left)
            raise StageFailed(stage, report["cause"], recurs=report["recurs"]) from err
        causes, at = [], err
        while at is not None:  # "failed to reproduce 'x'" <- "failed to run: ..., exited 1"
            causes.append(one_line(str(at)))
            at = at.__cause__
        raise StageFailed(stage, ": ".join(c for c in causes if c), recurs=False) from err
    finally:
        os.environ.pop(ENV, None)
        os.unlink(name)

"""A stage's failure as `cotflow run` reports it (cotflow/stage_errors.py): the stage's own
cause on one line, and no retry of a failure that will recur. Through a real run:
test_bad_input_e2e.py."""

from __future__ import annotations

import pytest
from dvc.exceptions import ReproductionError
from dvc.stage.exceptions import StageCmdFailedError
from prefect.states import Failed

from cotflow.data.errors import DataError
from cotflow.faults import InjectedFault
from cotflow.stage_errors import StageFailed, leave, stage_failure
from flows.pipeline import _may_pass_on_retry


def _fail_in_dvc(stage_error: Exception | None) -> None:
    """What a failed `Repo.reproduce` raises (DVC's errors, chained as DVC chains them),
    after the stage command left its cause through the environment, or none (killed)."""
    if stage_error is not None:
        leave(stage_error)
    try:
        raise StageCmdFailedError("python -m cotflow stage data", -9)
    except StageCmdFailedError as cmd:
        raise ReproductionError("failed to reproduce 'data'") from cmd


@pytest.mark.parametrize(
    ("stage_error", "message", "recurs"),
    [
        (DataError("data/my.jsonl: row 4 (id 'b'), field 'answer': expected a string"),
         "data failed: data/my.jsonl: row 4 (id 'b'), field 'answer': expected a string",
         True),
        (ValueError("two\nlines"), "data failed: two; lines", True),
        (InjectedFault("injected fault at data:start"),
         "data failed: injected fault at data:start", False),
        (None, "data failed: failed to reproduce 'data': failed to run: python -m "
               "cotflow stage data, exited with -9", False),
    ],
    ids=["bad-row", "multi-line", "transient", "killed"],
)
def test_the_stage_cause_on_one_line(stage_error, message, recurs):
    with pytest.raises(StageFailed) as caught, stage_failure("data"):
        _fail_in_dvc(stage_error)
    assert str(caught.value) == message and caught.value.recurs is recurs
    # Prefect asks before its retry: never for what will fail the same way.
    assert _may_pass_on_retry(None, None, Failed(data=caught.value)) is not recurs


def test_other_failures_are_retried():
    assert _may_pass_on_retry(None, None, Failed(data=OSError("connection reset")))

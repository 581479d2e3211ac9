"""Problem records: the built-in arithmetic task and real datasets."""

from cotflow.data.arithmetic import check_step, generate_problems, make_splits, solution_steps
from cotflow.data.errors import DataError
from cotflow.data.sources import ColumnMap, load_rows, validate_rows

__all__ = [
    "ColumnMap",
    "DataError",
    "check_step",
    "generate_problems",
    "load_rows",
    "make_splits",
    "solution_steps",
    "validate_rows",
]

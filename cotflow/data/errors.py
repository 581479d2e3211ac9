"""Errors raised by the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """Invalid or unloadable input data; the message names the source, row and field."""


def row_error(
    source: str, index: int, field: str, problem: str, row_id: object = None
) -> DataError:
    """A DataError whose message points at one field of one row."""
    where = f"row {index}" if row_id in (None, "") else f"row {index} (id {row_id!r})"
    return DataError(f"{source}: {where}, field {field!r}: {problem}")

"""Argument checks shared by the algorithm modules (pure python)."""

from __future__ import annotations

from collections.abc import Collection


def check_choice(param: str, value: object, allowed: Collection[object]) -> None:
    """Raise ValueError naming ``param`` and the bad ``value`` unless it is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{param}={value!r} is not one of {sorted(map(repr, allowed))}")

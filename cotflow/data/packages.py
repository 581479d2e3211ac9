"""The optional packages some data sources come from (the `data` extra), imported only by
the source that needs them, with an error that says what to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from cotflow.data.errors import DataError

EXTRA = "pip install -e '.[data]'"


def _missing(source: str, pip_name: str) -> str:
    return (
        f"data.source {source!r} needs the package {pip_name}, which is not installed: "
        f"pip install {pip_name} (or the extra: {EXTRA})"
    )


def import_for(source: str, module: str, pip_name: str) -> ModuleType:
    """`module`, imported; a DataError naming data.source and the pip command if absent."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DataError(_missing(source, pip_name)) from err


def check_installed(source: str, module: str, pip_name: str) -> None:
    """Raise the same DataError as `import_for` without importing (for `cotflow validate`)."""
    if importlib.util.find_spec(module) is None:
        raise DataError(_missing(source, pip_name))

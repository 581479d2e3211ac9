"""Whether this machine can run the backends a config chooses, found out without importing
them (find_spec, PATH): what a stage checks before it writes anything, and what the validate
stage checks for every iteration before any stage runs."""

from __future__ import annotations

import importlib.util
from typing import Any


def check_backends(cfg: Any, *, sampling: bool = True, training: bool = True) -> None:
    """Raise ValueError naming the extra to install for `cfg`'s sampling and/or training
    backend where this machine lacks it."""
    if sampling:
        from models.sampler import check_available

        check_available(cfg.sample.backend, cfg.serving)
    if training and cfg.train.backend == "deepspeed" and (
            importlib.util.find_spec("deepspeed") is None):
        raise ValueError("train.backend deepspeed needs the extra: "
                         "DS_BUILD_OPS=0 pip install -e '.[deepspeed]'")

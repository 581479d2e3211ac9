"""validate: the first DVC stage, and what `cotflow run` checks before it starts anything.

DVC removes a stage's outputs before it runs the stage's command, so a stage that refuses
bad input has already lost its artifacts. Everything that can be checked without running a
stage is therefore checked here, first: params.yaml (keys, types, values and every
iteration's overrides: config.load_params), that a local data.source exists (a package
source: that its package is installed, and a reasoning-gym task's settings), that a local
model.name_or_path holds a checkpoint (offline: that a Hub id is in the cache; for a GGUF
source, that the file or the package shipping it and the gguf extra are there) whose
tokenizer has a chat template where data.chat_template asks for one, and that
the extras the backends need are installed.

The output, artifacts/validated.json, holds the same bytes whatever the params. Every
other stage depends on it: DVC then runs this stage first and stops here on bad input, yet
a change of params still reruns only the stages that read what changed. It is a persistent
output, which DVC keeps in place while the stage runs, so a failure here leaves it as well.
"""

from __future__ import annotations

import json
from pathlib import Path

from cotflow.config import PipelineConfig, load_params
from cotflow.config_types import ConfigError
from cotflow.layout import Layout

MARK = json.dumps({"schema": 1, "valid": True}, indent=2, sort_keys=True) + "\n"


def validate(root: Path) -> PipelineConfig:
    """The workspace's params.yaml, validated with what it names; raise an error (a
    ValueError) whose message names the key at fault."""
    from cotflow.data.errors import DataError
    from cotflow.data.splits import check_source
    from models.backends import check_backends
    from models.source import check_chat_template, check_model_source

    cfg = load_params(root / "params.yaml")
    try:
        check_source(cfg.data, root)
    except DataError as err:
        message = str(err)  # the package sources' messages name their key already
        raise ConfigError(
            message if message.startswith("data.") else f"data.source: {message}"
        ) from None
    check_model_source(cfg.model.name_or_path, root)
    check_chat_template(cfg.data, cfg.model.name_or_path, root)
    check_backends(cfg)  # the base stages', and any iteration's that overrides nothing
    for key, it in cfg.iterations.items():
        if it.overrides:  # may choose another backend
            try:
                check_backends(cfg.for_iteration(key))
            except ValueError as err:
                raise ConfigError(f"iterations.{key}.overrides: {err}") from None
    return cfg


def run(root: Path) -> PipelineConfig:
    """The stage: validate, log what was checked, write the mark where it is not already."""
    layout = Layout(root)
    log = layout.validate_log
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        cfg = validate(root)
    except Exception as err:
        log.write_text(f"validate failed: {err}\n")
        raise
    log.write_text(
        f"params.yaml is valid: iterations {', '.join(cfg.iteration_keys())}; data.source "
        f"{cfg.data.source}; model.name_or_path {cfg.model.name_or_path}; sample.backend "
        f"{cfg.sample.backend}; train.backend {cfg.train.backend}\n")
    mark = layout.validated
    if not mark.is_file() or mark.read_text() != MARK:
        from cotflow.records import atomic_path

        with atomic_path(mark) as tmp:
            tmp.write_text(MARK)
    return cfg

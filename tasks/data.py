"""data: the train and held-out splits, checked against the model's context before either is
written, and the base folder's empty rollout files.

Input: the model stage's artifacts/base/model/ (a GGUF source's converted tokenizer).

Outputs: artifacts/base/{train,test}.parquet and the empty {samples,verdicts,flags}.parquet
(layout.base_rollout_files). The warm start (tasks/warmstart.py) and its evaluation
(tasks/baseline.py) are stages of their own, so that a setting of theirs leaves the splits be.
A reasoning-gym source's stats also say how often its task's scorer agrees with the verifier
(cotflow/data/gym_scorer.py).
"""

from __future__ import annotations

import logging
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.data.gym import is_gym
from cotflow.data.splits import load_splits
from cotflow.layout import Layout
from cotflow.records import write_table
from models.drawing import check_context

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, layout: Layout) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.policy import tokenizer_and_context
    from models.source import source_model

    train, test = load_splits(cfg)
    # Here, not in the warm start: the splits are what is checked, and a prompt too long for
    # the model must stop the pipeline before anything is written. The tokenizer and the
    # context length come without the weights (a Hub model's load is the warm start's cost).
    tokenizer, context = tokenizer_and_context(cfg, source_model(cfg, layout))
    check_context(cfg, tokenizer, context, {"held-out": test, "train": train})
    write_table(layout.train_set, "problems", train)
    write_table(layout.test_set, "problems", test)
    for kind, path in layout.base_rollout_files.items():
        write_table(path, kind, [])
    stats = {"train_problems": len(train), "test_problems": len(test)}
    if is_gym(cfg.data.source):  # where the task's own scorer would reward otherwise
        from cotflow.data.gym_scorer import agreement_stats

        stats |= agreement_stats(cfg.data.source, cfg.data.reasoning_gym, test)
    return stats, {}

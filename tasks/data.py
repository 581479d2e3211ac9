"""data: the train and held-out splits, checked against the model's context before either is
written, and the base folder's empty rollout files.

Outputs: artifacts/base/{train,test}.parquet and the empty {samples,verdicts,flags}.parquet
(layout.base_rollout_files). The warm start (tasks/warmstart.py) and its evaluation
(tasks/baseline.py) are stages of their own, so that a setting of theirs leaves the splits be.
"""

from __future__ import annotations

import logging
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import Layout
from cotflow.records import write_table

log = logging.getLogger(__name__)


def load_splits(cfg: PipelineConfig) -> tuple[list[dict], list[dict]]:
    """Train and held-out problems from the built-in task or a `datasets` source."""
    from cotflow.data.sources import ColumnMap, is_local_file, load_rows, validate_rows

    d = cfg.data
    # Character tokenizer: a question longer than this cannot fit beside its answer.
    limit = None
    if cfg.model.name_or_path == "tiny":
        limit = cfg.model.max_position_embeddings - cfg.sample.max_new_tokens - len(
            d.prompt_template.format(question="")) - 1
    if d.source == "builtin":
        from cotflow.data.arithmetic import make_splits

        train, test = make_splits(d.n_train, d.n_test, cfg.seed, d.difficulties)
        validate_rows(train + test, "builtin", max_question_chars=limit)
    else:
        cols = ColumnMap(**d.columns.model_dump())
        if is_local_file(d.source):
            # One file holds both: the first n_test rows are held out, the next n_train train.
            rows = load_rows(d.source, columns=cols, answer_format=d.answer_format,
                             limit=d.n_test + d.n_train, max_question_chars=limit)
            test, train = rows[:d.n_test], rows[d.n_test:]
        else:
            train = load_rows(d.source, split=d.train_split, columns=cols,
                              answer_format=d.answer_format, limit=d.n_train,
                              max_question_chars=limit)
            test = load_rows(d.source, split=d.test_split, columns=cols,
                             answer_format=d.answer_format, limit=d.n_test,
                             max_question_chars=limit)
    for name, rows in (("train", train), ("held-out", test)):
        if not rows:
            raise ValueError(f"data.source {d.source!r}: the {name} split is empty")
    overlap = {p["question"] for p in train} & {p["question"] for p in test}
    if overlap:
        raise ValueError(f"{d.source}: {len(overlap)} held-out questions also appear in the "
                         f"train split, e.g. {sorted(overlap)[0]!r}")
    return train, test


def check_context(cfg: PipelineConfig, tokenizer: Any, context: int,
                  splits: dict[str, list[dict]]) -> None:
    """Refuse a prompt that leaves the model no room for its answer, naming the row."""
    from cotflow.data.errors import DataError
    from models.drawing import format_prompt

    new_tokens = max(cfg.sample.max_new_tokens, cfg.evaluate.max_new_tokens)
    room = context - new_tokens
    for name, rows in splits.items():
        if not rows:
            continue
        ids = tokenizer([format_prompt(cfg, r["question"]) for r in rows])["input_ids"]
        for i, (row, prompt) in enumerate(zip(rows, ids, strict=True)):
            if len(prompt) > room:
                raise DataError(
                    f"{cfg.data.source}: {name} split, row {i} (id {row['id']!r}), field "
                    f"'question': the prompt is {len(prompt)} tokens, but the model's context "
                    f"of {context} leaves {room} beside {new_tokens} new tokens "
                    "(sample/evaluate.max_new_tokens)")


def run(cfg: PipelineConfig, layout: Layout) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.policy import tokenizer_and_context

    train, test = load_splits(cfg)
    # Here, not in the warm start: the splits are what is checked, and a prompt too long for
    # the model must stop the pipeline before anything is written. The tokenizer and the
    # context length come without the weights (a Hub model's load is the warm start's cost).
    tokenizer, context = tokenizer_and_context(cfg)
    check_context(cfg, tokenizer, context, {"held-out": test, "train": train})
    write_table(layout.train_set, "problems", train)
    write_table(layout.test_set, "problems", test)
    for kind, path in layout.base_rollout_files.items():
        write_table(path, kind, [])
    return {"train_problems": len(train), "test_problems": len(test)}, {}

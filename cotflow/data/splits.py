"""The train and held-out problems of `data.source`: the data stage's splits, and one split
of them for `cotflow eval`.

The built-in task is generated (held-out problems first, so they do not move with
`n_train`); a local file holds both splits, its first `data.n_test` rows held out and the
next `data.n_train` for training; so does a reasoning-gym task's generated set
(cotflow/data/gym.py); a Hub dataset has its own named splits; champ is a test split alone
(cotflow/data/champ.py), for `cotflow eval`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cotflow.data.errors import DataError
from cotflow.data.gym import is_gym
from cotflow.data.sources import ColumnMap, check_local, is_local_file, load_rows, validate_rows

if TYPE_CHECKING:
    from cotflow.config import DataConfig, PipelineConfig

CHAMP = "champ"


def _champ_cannot_train() -> DataError:
    return DataError(
        "data.source champ: an evaluation set with a test split only, and the "
        "pipeline trains on data.source; choose another source and evaluate "
        "checkpoints on it with `cotflow eval MODEL --source champ`"
    )


def check_source(d: DataConfig, root: Path = Path(".")) -> None:
    """What can be known of `data.source` before the data stage runs, as a DataError: a
    local file is there; a package source's package is installed (and a reasoning-gym task
    and its settings exist); champ, which has no train split, is refused."""
    from cotflow.data.packages import check_installed

    check_local(d.source, root)
    if is_gym(d.source):
        from cotflow.data.gym import check_gym

        check_installed(d.source, "reasoning_gym", "reasoning-gym")
        check_gym(d.source, d.reasoning_gym)
    elif d.source == CHAMP:
        check_installed(d.source, "champ_dataset", "champ-dataset")
        raise _champ_cannot_train()


def load_splits(cfg: PipelineConfig) -> tuple[list[dict], list[dict]]:
    """Train and held-out problems from the built-in task or a `datasets` source."""
    d = cfg.data
    # Character tokenizer: a question longer than this cannot fit beside its answer.
    limit = None
    if cfg.model.name_or_path == "tiny":
        limit = cfg.model.max_position_embeddings - cfg.sample.max_new_tokens - len(
            d.user_message("")) - 1
    if d.source == "builtin":
        from cotflow.data.arithmetic import make_splits

        train, test = make_splits(d.n_train, d.n_test, cfg.seed, d.difficulties)
        validate_rows(train + test, "builtin", max_question_chars=limit)
    elif is_gym(d.source):
        from cotflow.data.gym import gym_splits

        test, train = gym_splits(d.source, d.reasoning_gym, d.n_test, d.n_train)
        validate_rows(test + train, d.source, max_question_chars=limit)
    elif d.source == CHAMP:
        raise _champ_cannot_train()
    else:
        cols = ColumnMap(**d.columns.model_dump())
        if is_local_file(d.source):
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


def load_split(cfg: PipelineConfig, split: str, n: int | None = None,
               columns: ColumnMap | None = None) -> list[dict]:
    """The first `n` problems (None: all) of one split, as `load_splits` splits them: `test`
    or `train` of the built-in task or a local file, or any split of a Hub dataset (`test`
    and `train` there are `data.test_split` and `data.train_split`). `columns` replace
    `data.columns` (e.g. to map a subject column too)."""
    d = cfg.data
    local = is_local_file(d.source)
    if split not in ("train", "test") and (d.source == "builtin" or local or is_gym(d.source)):
        raise ValueError(f"split {split!r}: {d.source} has the splits train and test")
    if d.source == CHAMP:
        from cotflow.data.champ import load_champ

        return load_champ(split, n)
    if is_gym(d.source):
        from cotflow.data.gym import gym_splits

        # The held-out problems lead: the train split's are those after all of them.
        size = d.n_test if split == "test" else d.n_train
        take = size if n is None else min(n, size)
        if split == "test":
            return gym_splits(d.source, d.reasoning_gym, take, 0)[0]
        return gym_splits(d.source, d.reasoning_gym, d.n_test, take)[1]
    if d.source == "builtin":
        from cotflow.data.arithmetic import make_splits

        train, test = make_splits(d.n_train, d.n_test, cfg.seed, d.difficulties)
        rows = test if split == "test" else train
        return rows[:n]
    cols = columns if columns is not None else ColumnMap(**d.columns.model_dump())
    if local:
        # Only the rows needed: the held-out ones lead the file.
        size = d.n_test if split == "test" else d.n_train
        take = size if n is None else min(n, size)
        skip = 0 if split == "test" else d.n_test
        rows = load_rows(d.source, columns=cols, answer_format=d.answer_format,
                         limit=skip + take)
        return rows[skip:]
    name = {"train": d.train_split, "test": d.test_split}.get(split, split)
    return load_rows(d.source, split=name, columns=cols, answer_format=d.answer_format,
                     limit=n)

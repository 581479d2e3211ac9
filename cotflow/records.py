"""Columnar records on disk: parquet tables and small JSON files, written atomically.

A write goes to a hidden temporary name in the same folder and is renamed into place, so
a reader (or DVC) never sees a half-written file. A killed stage leaves only such hidden
temporaries, which the next write of the same path sweeps away.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cotflow import faults

# Column name -> arrow type, per artifact kind. A table is checked against its schema on
# write and on read, so a malformed record is named where it is met.
SCHEMAS: dict[str, dict[str, pa.DataType]] = {
    "problems": {
        "id": pa.string(), "question": pa.string(), "solution": pa.string(),
        "answer": pa.string(), "difficulty": pa.int64(),
    },
    "allocation": {"prompt_id": pa.string(), "n": pa.int64()},
    "budget": {
        "prompt_id": pa.string(), "probe_samples": pa.int64(), "probe_reused": pa.bool_(),
        "accepted": pa.int64(), "p": pa.float64(), "G": pa.float64(), "ratio": pa.float64(),
        "n": pa.int64(),
    },
    "samples": {
        "prompt_id": pa.string(), "sample_idx": pa.int64(), "prompt": pa.string(),
        "completion": pa.string(), "num_tokens": pa.int64(), "finished": pa.bool_(),
        # The ids as sampled: what the policy read (no padding) and wrote (<eos> iff finished).
        "prompt_ids": pa.list_(pa.int64()), "completion_ids": pa.list_(pa.int64()),
    },
    # SPO-chain, per sampled response: π_old of each token at the sampling temperature, the
    # segment boundaries (token positions) and the MC value of the state before each.
    "values": {
        "prompt_id": pa.string(), "sample_idx": pa.int64(), "probs": pa.list_(pa.float64()),
        "boundaries": pa.list_(pa.int64()), "values": pa.list_(pa.float64()),
    },
    # The MC continuations behind those values: one row per continuation of a state (the
    # prompt plus the first `prefix_tokens` tokens of a response), deduplicated by state.
    "continuations": {
        "prompt_id": pa.string(), "sample_idx": pa.int64(), "prefix_tokens": pa.int64(),
        "completion_ids": pa.list_(pa.int64()), "finished": pa.bool_(),
        "reward": pa.float64(),
    },
    # SPO-tree: one row per node of each prompt's tree (the root, the prompt, has none).
    # `parent` is -1 under the root; a leaf's full text is samples.parquet's row `leaf`.
    "tree": {
        "prompt_id": pa.string(), "node": pa.int64(), "parent": pa.int64(),
        "depth": pa.int64(), "token_ids": pa.list_(pa.int64()), "leaf": pa.int64(),
    },
    "verdicts": {
        "prompt_id": pa.string(), "sample_idx": pa.int64(), "verdict": pa.string(),
        "reward": pa.float64(), "extracted": pa.string(),
    },
    # Critique-GRPO: per sampled response, its critique and the policy's refinement.
    "critiques": {
        "prompt_id": pa.string(), "sample_idx": pa.int64(), "critique_type": pa.string(),
        "critic": pa.string(),  # who wrote it: builtin | indicative | lm | policy | fallback
        "critique": pa.string(), "refinement_prompt": pa.string(), "refinement": pa.string(),
        "refinement_prompt_ids": pa.list_(pa.int64()), "refinement_ids": pa.list_(pa.int64()),
        "num_tokens": pa.int64(), "finished": pa.bool_(), "verdict": pa.string(),
        "reward": pa.float64(), "extracted": pa.string(),
        "selected": pa.bool_(),  # the prompt's refinement that joins its group (§3.3)
    },
    # One row per held-out problem: what paired comparisons of two runs need.
    "evaluation": {
        "id": pa.string(), "difficulty": pa.int64(), "greedy_correct": pa.bool_(),
        "sampled_correct": pa.int64(), "n_samples": pa.int64(),
    },
    # A pair names its rollouts (by sample_idx in the folder the judge read) and carries
    # the token ids it trains on: a VerIPO reflection's chosen is a composite no sample holds.
    "judgements": {
        "prompt_id": pa.string(), "chosen_idx": pa.int64(), "rejected_idx": pa.int64(),
        "score": pa.float64(), "kind": pa.string(), "prompt_ids": pa.list_(pa.int64()),
        "chosen_ids": pa.list_(pa.int64()), "rejected_ids": pa.list_(pa.int64()),
    },
    # The rollout-aware verifier's flags per rollout (VerIPO, specs/algorithms-b.md §4.4);
    # consistent is "yes", "no" or "unknown"; drop_prompt marks prompts pruned for later.
    "flags": {
        "prompt_id": pa.string(), "sample_idx": pa.int64(), "correct": pa.bool_(),
        "consistent": pa.string(), "repetitive": pa.bool_(), "length": pa.int64(),
        "finished": pa.bool_(), "category": pa.string(), "drop_prompt": pa.bool_(),
    },
}


class RecordError(ValueError):
    """A record file is missing, unreadable or does not match its schema."""


def _schema(kind: str) -> pa.Schema:
    return pa.schema([pa.field(name, typ) for name, typ in SCHEMAS[kind].items()])


def _sweep(path: Path) -> None:
    """Remove temporaries a killed earlier write left beside `path` (one writer per path:
    DVC's rwlock guarantees it for stage outputs)."""
    for stale in path.parent.glob(f".{path.name}.*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(
            missing_ok=True)


@contextmanager
def atomic_path(path: Path, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; on success rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep(path)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        # mkstemp/mkdtemp create private (0600/0700) entries; give the usual umask modes.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~umask)
        yield tmp
        faults.point("write")
        if is_dir and path.exists():
            # A folder cannot be renamed onto a non-empty one: move the old aside first, so
            # some complete version is in place at every moment but one rename.
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if is_dir else tmp.unlink(missing_ok=True)
        raise


def write_table(path: Path, kind: str, rows: Sequence[dict[str, Any]] | dict[str, list]) -> Path:
    """Write rows (a list of dicts, or columns as a dict of lists) as a parquet table."""
    schema = _schema(kind)
    try:
        if isinstance(rows, dict):
            table = pa.table({name: rows[name] for name in schema.names}, schema=schema)
        else:
            table = pa.Table.from_pylist(list(rows), schema=schema)
    except (KeyError, pa.ArrowException, TypeError) as err:
        raise RecordError(f"{path}: rows do not match the {kind!r} schema: {err}") from None
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_table(path: Path, kind: str) -> dict[str, list]:
    """Read a parquet table as columns; error names the file and the bad column."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: missing (did the stage that writes it run?)")
    try:
        # One file, read as such: pq.read_table goes through pyarrow.dataset, whose import
        # (and pandas', which it pulls in) costs a stage process about a second.
        with pq.ParquetFile(path) as file:
            table = file.read()
    except (pa.ArrowException, OSError) as err:
        raise RecordError(f"{path}: not a readable parquet file: {err}") from None
    for name, typ in SCHEMAS[kind].items():
        if name not in table.column_names:
            raise RecordError(f"{path}: missing column {name!r} (have {table.column_names})")
        if not table.schema.field(name).type.equals(typ):
            raise RecordError(f"{path}: column {name!r} is {table.schema.field(name).type}, "
                              f"expected {typ}")
        nulls = table.column(name).null_count
        if nulls and name not in ("extracted",):
            row = table.column(name).to_pylist().index(None)
            raise RecordError(f"{path}: row {row}: field {name!r} is null")
    columns = {name: table.column(name).to_pylist() for name in SCHEMAS[kind]}
    ids_field = {"samples": "completion_ids", "critiques": "refinement_ids"}.get(kind)
    if ids_field:
        # Trainers take a sample's length from either: they must agree.
        for row, (n, ids) in enumerate(zip(columns["num_tokens"], columns[ids_field],
                                           strict=True)):
            if n != len(ids):
                raise RecordError(f"{path}: row {row}: field 'num_tokens' is {n}, but "
                                  f"{ids_field!r} holds {len(ids)} ids")
    return columns


def rows_of(columns: dict[str, list]) -> list[dict[str, Any]]:
    names = list(columns)
    return [dict(zip(names, vals, strict=True)) for vals in zip(*columns.values(), strict=True)]


def write_json(path: Path, obj: Any) -> Path:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return path


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: missing (did the stage that writes it run?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: not valid JSON: {err}") from None

"""Real datasets (local files or Hugging Face Hub ids) mapped to the problem record format.

A record is ``{"id", "question", "solution", "answer", "difficulty"}`` with string fields
and an int difficulty (0 when unknown), plus a string ``subject`` where a column is mapped
to it (`cotflow eval` groups by it; the pipeline's splits have none). Bad input fails early
with a message that names the source, the row and the field, so a broken dataset is fixed
before any training starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotflow.data.errors import DataError, row_error
from cotflow.verify.extract import extract_boxed, parse_reference_answer

ANSWER_FORMATS = ("auto", "gsm8k", "boxed", "plain")
RECORD_FIELDS = ("id", "question", "solution", "answer", "difficulty")
_LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_GSM8K_MARKER = "####"


def is_local_file(source: str) -> bool:
    """True if `source` names a local .jsonl/.json/.parquet file rather than a Hub id."""
    return Path(source).suffix.lower() in _LOCAL_SUFFIXES


def check_local(source: str, root: Path = Path(".")) -> None:
    """Raise DataError if `source` names a local file or folder (relative to `root`) that is
    not there; a Hub id passes (whether it loads is the loader's business)."""
    path = Path(root) / source
    if is_local_file(source) and not path.is_file():
        raise DataError(f"{source}: file not found")
    if source.startswith((".", "/")) and not path.exists():
        raise DataError(f"{source}: no such file or folder")


@dataclass(frozen=True)
class ColumnMap:
    """Which source column feeds each record field (None: not present in the source)."""

    question: str = "question"
    answer: str = "answer"
    solution: str | None = None
    id: str | None = None
    difficulty: str | None = None
    subject: str | None = None  # not in params.yaml's data.columns: `cotflow eval --columns`


def _load_table(source: str, split: str, cache_dir: str | None) -> tuple[list[dict], list[str]]:
    # Imported lazily: `datasets` is slow to import and only needed for real sources.
    import datasets

    builder = _LOCAL_SUFFIXES.get(Path(source).suffix.lower())
    check_local(source)
    if builder is not None:
        try:
            # A local file is a single table, which `datasets` always names "train".
            ds = datasets.load_dataset(
                builder, data_files=source, split="train", cache_dir=cache_dir
            )
        except Exception as err:
            raise DataError(f"{source}: could not read {builder} file: {err}") from err
    else:
        try:
            ds = datasets.load_dataset(source, split=split, cache_dir=cache_dir)
        except Exception as err:
            raise DataError(
                f"could not load Hub dataset {source!r} (split {split!r}): {err}. "
                "Download it first (e.g. with network access, so it lands in the HF cache) "
                "or pass a local .jsonl/.json/.parquet file instead."
            ) from err
    return ds.to_list(), list(ds.column_names)


def _answer_text(value: Any, source: str, index: int, row_id: str | None) -> str:
    # Numeric answer columns (e.g. 42) are common and unambiguous; other types are not.
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    raise row_error(source, index, "answer", f"expected a string, got {_kind(value)}", row_id)


def _parse_answer(text: str, fmt: str, source: str, index: int, row_id: str | None) -> str:
    """The final answer in ``text`` ("" when nothing is left; validate_rows reports it)."""
    if fmt == "gsm8k" and _GSM8K_MARKER not in text:
        raise row_error(source, index, "answer", f"no '#### <answer>' in {text[:60]!r}", row_id)
    if fmt == "boxed":
        boxed = extract_boxed(text)
        if boxed is None:
            raise row_error(source, index, "answer", f"no \\boxed{{}} in {text[:60]!r}", row_id)
        return boxed.strip()
    if fmt == "plain":
        return text.strip()
    try:
        return parse_reference_answer(text)
    except ValueError:
        return ""


def _difficulty(value: Any, source: str, index: int, row_id: str | None) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        # MATH writes "Level 5"; "Level ?" and other labels without a number mean unknown.
        match = re.search(r"\d+", value)
        return int(match.group()) if match else 0
    raise row_error(source, index, "difficulty", f"expected an int, got {_kind(value)}", row_id)


def _kind(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _to_record(raw: dict, index: int, source: str, stem: str, columns: ColumnMap, fmt: str) -> dict:
    row_id: str | None = None
    if columns.id is not None:
        value = raw[columns.id]
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise row_error(source, index, "id", f"expected a non-empty id, got {value!r}")
        row_id = value
    question = raw[columns.question]
    if not isinstance(question, str):
        raise row_error(
            source, index, "question", f"expected a string, got {_kind(question)}", row_id
        )
    answer_text = _answer_text(raw[columns.answer], source, index, row_id)
    answer = _parse_answer(answer_text, fmt, source, index, row_id)
    if columns.solution is not None:
        solution = raw[columns.solution]
        if solution is None:
            solution = ""
        if not isinstance(solution, str):
            raise row_error(
                source, index, "solution", f"expected a string, got {_kind(solution)}", row_id
            )
    elif _GSM8K_MARKER in answer_text and fmt in ("auto", "gsm8k"):
        solution = answer_text.rsplit(_GSM8K_MARKER, 1)[0].strip()
    elif answer_text.strip() != answer:
        # MATH-style: the answer column is a full worked solution ending in \boxed{}.
        solution = answer_text.strip()
    else:
        solution = ""
    difficulty = 0
    if columns.difficulty is not None:
        difficulty = _difficulty(raw[columns.difficulty], source, index, row_id)
    record = {
        "id": row_id if row_id is not None else f"{stem}-{index}",
        "question": question,
        "solution": solution,
        "answer": answer,
        "difficulty": difficulty,
    }
    if columns.subject is not None:
        value = raw[columns.subject]
        record["subject"] = "" if value is None else str(value)
    return record


def load_rows(
    source: str,
    *,
    split: str = "train",
    columns: ColumnMap | None = None,
    answer_format: str = "auto",
    limit: int | None = None,
    max_question_chars: int | None = None,
    cache_dir: str | None = None,
) -> list[dict]:
    """Load ``source`` (a local .jsonl/.json/.parquet file or a Hub id) as validated records.

    ``split`` applies to Hub datasets only. ``limit`` keeps the first rows. ``answer_format``
    is "gsm8k" (``#### 42``), "boxed" (``\\boxed{42}``), "plain" (as is) or "auto" (``####``
    if present, else ``\\boxed{}`` if present, else as is).
    """
    columns = columns if columns is not None else ColumnMap()
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    table, available = _load_table(source, split, cache_dir)
    for field in ("question", "answer", "solution", "id", "difficulty", "subject"):
        column = getattr(columns, field)
        if column is not None and column not in available:
            raise DataError(
                f"{source}: missing column {column!r} (for field {field!r}); "
                f"available columns: {available}"
            )
    if limit is not None:
        table = table[:limit]
    stem = Path(source).stem if Path(source).suffix.lower() in _LOCAL_SUFFIXES else source
    stem = stem.rstrip("/").rsplit("/", 1)[-1]
    rows = [_to_record(raw, i, source, stem, columns, answer_format) for i, raw in enumerate(table)]
    validate_rows(rows, source, max_question_chars=max_question_chars)
    return rows


def validate_rows(rows: list[dict], source: str, *, max_question_chars: int | None = None) -> None:
    """Raise DataError at the first malformed record; the message names row and field."""
    first_row_of_id: dict[str, int] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise row_error(source, index, "record", f"expected a dict, got {_kind(row)}")
        row_id = row.get("id")
        for field in RECORD_FIELDS:
            if field not in row:
                raise row_error(source, index, field, "missing", row_id)
            expected = int if field == "difficulty" else str
            value = row[field]
            if not isinstance(value, expected) or isinstance(value, bool):
                raise row_error(
                    source,
                    index,
                    field,
                    f"expected {expected.__name__}, got {_kind(value)}",
                    row_id,
                )
        if not row_id.strip():
            raise row_error(source, index, "id", "empty id")
        if not row["question"].strip():
            raise row_error(source, index, "question", "empty or whitespace-only", row_id)
        if not row["answer"].strip():
            raise row_error(source, index, "answer", "empty after parsing", row_id)
        if max_question_chars is not None and len(row["question"]) > max_question_chars:
            raise row_error(
                source,
                index,
                "question",
                f"{len(row['question'])} characters exceeds the limit of {max_question_chars}",
                row_id,
            )
        if row_id in first_row_of_id:
            raise row_error(
                source,
                index,
                "id",
                f"duplicate id, also used by row {first_row_of_id[row_id]}",
                row_id,
            )
        first_row_of_id[row_id] = index

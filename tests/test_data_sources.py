"""Tests for loading real datasets from local files (and failing clearly for the Hub)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cotflow.data import ColumnMap, DataError, generate_problems, load_rows, validate_rows


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never reach the Hub, and keep the datasets cache inside the test's tmp dir."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    # The flags are read once at import; patch them too in case datasets is already loaded.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _parquet(path: Path, rows: list[dict]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3+2=<<3+2=5>>5\n#### 5"},
    {"question": "A car costs 1234 dollars. Price?", "answer": "It costs 1,234.\n#### 1,234"},
]


def test_load_gsm8k_jsonl(tmp_path: Path) -> None:
    rows = load_rows(_jsonl(tmp_path / "gsm.jsonl", GSM8K_ROWS), columns=ColumnMap())
    assert [r["answer"] for r in rows] == ["5", "1234"]
    assert rows[0]["solution"] == "3+2=<<3+2=5>>5"
    assert [r["id"] for r in rows] == ["gsm-0", "gsm-1"]
    assert rows[0]["difficulty"] == 0
    strict = load_rows(str(tmp_path / "gsm.jsonl"), columns=ColumnMap(), answer_format="gsm8k")
    assert strict == rows
    assert len(load_rows(str(tmp_path / "gsm.jsonl"), columns=ColumnMap(), limit=1)) == 1


def test_load_math_parquet(tmp_path: Path) -> None:
    rows = [
        {"problem": "Compute $1+1$.", "solution": "Add: $\\boxed{2}$.", "level": "Level 1"},
        {
            "problem": "Simplify $\\frac{2}{4}$.",
            "solution": "$\\boxed{\\frac{1}{2}}$",
            "level": "Level ?",
        },
    ]
    path = _parquet(tmp_path / "math.parquet", rows)
    cols = ColumnMap(question="problem", answer="solution", solution="solution", difficulty="level")
    for fmt in ("boxed", "auto"):
        loaded = load_rows(path, columns=cols, answer_format=fmt)
        assert [r["answer"] for r in loaded] == ["2", "\\frac{1}{2}"]
        assert loaded[0]["solution"] == "Add: $\\boxed{2}$."
        assert [r["difficulty"] for r in loaded] == [1, 0]


def test_custom_columns_and_numeric_answers(tmp_path: Path) -> None:
    rows = [
        {"uid": "p1", "prompt": "2+2?", "target": 4, "steps": "2+2=4", "lvl": 2},
        {"uid": "p2", "prompt": "3*3?", "target": 9, "steps": None, "lvl": None},
    ]
    cols = ColumnMap(
        question="prompt", answer="target", solution="steps", id="uid", difficulty="lvl"
    )
    for path in (_jsonl(tmp_path / "c.jsonl", rows), _parquet(tmp_path / "c.parquet", rows)):
        loaded = load_rows(path, columns=cols, answer_format="plain")
        assert loaded == [
            {"id": "p1", "question": "2+2?", "solution": "2+2=4", "answer": "4", "difficulty": 2},
            {"id": "p2", "question": "3*3?", "solution": "", "answer": "9", "difficulty": 0},
        ]


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "arr.json"
    path.write_text(json.dumps([{"question": "1+1?", "answer": "2"}]))
    assert load_rows(str(path), columns=ColumnMap())[0]["answer"] == "2"


def _bad(tmp_path: Path, rows: list[dict], **kwargs: object) -> str:
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    kwargs.setdefault("columns", ColumnMap())
    with pytest.raises(DataError) as info:
        load_rows(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert path in message
    return message


GOOD = {"question": "1+1?", "answer": "2"}


def test_missing_column_lists_available(tmp_path: Path) -> None:
    message = _bad(tmp_path, [GOOD], columns=ColumnMap(answer="target"))
    assert "'target'" in message and "'answer'" in message and "'question'" in message


def test_none_answer(tmp_path: Path) -> None:
    message = _bad(tmp_path, [GOOD, GOOD, {"question": "q", "answer": None}])
    assert "row 2" in message and "'answer'" in message and "None" in message


def test_list_answer(tmp_path: Path) -> None:
    message = _bad(tmp_path, [GOOD, {"question": "q", "answer": ["2"]}])
    assert "row 1" in message and "'answer'" in message and "list" in message


def test_dict_question(tmp_path: Path) -> None:
    message = _bad(tmp_path, [{"question": {"text": "q"}, "answer": "1"}, GOOD])
    assert "row 0" in message and "'question'" in message and "dict" in message


def test_whitespace_question(tmp_path: Path) -> None:
    message = _bad(tmp_path, [GOOD, {"question": "  \n", "answer": "1"}])
    assert "row 1" in message and "'question'" in message


def test_empty_answer_after_parsing(tmp_path: Path) -> None:
    message = _bad(tmp_path, [GOOD, {"question": "q", "answer": "work\n####  "}])
    assert "row 1" in message and "'answer'" in message and "empty" in message


def test_gsm8k_format_without_marker(tmp_path: Path) -> None:
    message = _bad(tmp_path, [{"question": "q", "answer": "5"}], answer_format="gsm8k")
    assert "row 0" in message and "'answer'" in message and "####" in message


def test_boxed_format_without_box(tmp_path: Path) -> None:
    message = _bad(tmp_path, [GOOD], answer_format="boxed")
    assert "row 0" in message and "'answer'" in message and "boxed" in message


def test_duplicate_ids_name_both_rows(tmp_path: Path) -> None:
    rows = [{"id": "a", **GOOD}, {"id": "b", **GOOD}, {"id": "a", **GOOD}]
    message = _bad(tmp_path, rows, columns=ColumnMap(id="id"))
    assert "row 2" in message and "row 0" in message and "'id'" in message and "'a'" in message


def test_question_length_limit(tmp_path: Path) -> None:
    rows = [GOOD, {"question": "x" * 50, "answer": "1"}]
    message = _bad(tmp_path, rows, max_question_chars=40)
    assert "row 1" in message and "'question'" in message and "40" in message


def test_validate_rows_on_builtin_records() -> None:
    rows = generate_problems(3, seed=0)
    validate_rows(rows, "arith", max_question_chars=66)
    rows[1] = {**rows[1], "difficulty": "2"}
    with pytest.raises(DataError, match=r"arith: row 1 \(id 'arith-0-1'\), field 'difficulty'"):
        validate_rows(rows, "arith")
    with pytest.raises(DataError, match="row 0.*'question'.*limit of 10"):
        validate_rows(generate_problems(1, seed=0), "arith", max_question_chars=10)
    with pytest.raises(DataError, match="row 0.*'solution'.*missing"):
        validate_rows([{"id": "x", "question": "q", "answer": "1", "difficulty": 0}], "s")


def test_bad_arguments(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "ok.jsonl", [GOOD])
    with pytest.raises(ValueError, match="answer_format"):
        load_rows(path, columns=ColumnMap(), answer_format="latex")
    with pytest.raises(DataError, match="file not found"):
        load_rows(str(tmp_path / "missing.jsonl"), columns=ColumnMap())


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "q", "answer": \n')
    with pytest.raises(DataError, match="broken.jsonl"):
        load_rows(str(path), columns=ColumnMap())


def test_hub_id_offline_fails_fast_with_a_clear_message() -> None:
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_rows("no-such-org/no-such-dataset", split="test", columns=ColumnMap())
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "no-such-org/no-such-dataset" in message
    assert "download" in message.lower() and "local" in message

"""The data stage on real-style sources: a local GSM8K-style jsonl file."""

import json

import pytest
import yaml

from cotflow.config import load_params
from tasks.data import load_splits
from tests.conftest import micro_params


def _cfg(tmp_path, **data):
    raw = micro_params(data=data)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return load_params(tmp_path / "params.yaml")


def test_local_jsonl_gives_disjoint_splits(tmp_path):
    rows = [{"q": f"What is {i} plus {i}?", "a": f"{i}+{i}={2 * i}\n#### {2 * i:,}"}
            for i in range(500, 510)]
    src = tmp_path / "gsm.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = _cfg(tmp_path, source=str(src), n_train=6, n_test=3,
               columns={"question": "q", "answer": "a", "solution": None, "id": None,
                        "difficulty": None})
    train, test = load_splits(cfg)
    assert [p["answer"] for p in test] == ["1000", "1002", "1004"]  # "#### 1,000" -> 1000
    assert len(train) == 6 and not {p["id"] for p in train} & {p["id"] for p in test}
    assert train[0]["solution"] == "503+503=1006"


def test_bad_row_is_named(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"question": "ok?", "answer": "1"}) + "\n"
                   + json.dumps({"question": "broken", "answer": None}) + "\n")
    cfg = _cfg(tmp_path, source=str(src), n_train=1, n_test=1)
    with pytest.raises(ValueError, match=r"row 1.*answer"):
        load_splits(cfg)


def test_too_long_question_is_refused_for_the_tiny_model(tmp_path):
    src = tmp_path / "long.jsonl"
    src.write_text("\n".join(json.dumps({"question": "x" * n, "answer": "1"})
                             for n in (10, 20, 500)))
    cfg = _cfg(tmp_path, source=str(src), n_train=2, n_test=1)
    with pytest.raises(ValueError, match="question"):
        load_splits(cfg)

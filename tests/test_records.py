"""Atomic writes and schema checks of record files."""

import pytest

from cotflow.records import RecordError, atomic_path, read_table, write_json, write_table


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path):
    path = tmp_path / "allocation.parquet"
    write_table(path, "allocation", [{"prompt_id": "a", "n": 1}])
    with pytest.raises(RecordError, match="do not match the 'allocation' schema"):
        write_table(path, "allocation", [{"prompt_id": "a", "n": "many"}])
    assert read_table(path, "allocation") == {"prompt_id": ["a"], "n": [1]}
    assert [p.name for p in tmp_path.iterdir()] == ["allocation.parquet"]


def test_exception_inside_atomic_dir_keeps_previous_version(tmp_path):
    target = tmp_path / "policy"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "w").write_text("v1")
    with pytest.raises(RuntimeError), atomic_path(target, is_dir=True) as tmp:
        (tmp / "w").write_text("half")
        raise RuntimeError("killed")
    assert (target / "w").read_text() == "v1"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "w").write_text("v2")
    assert (target / "w").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]


def test_stale_temporaries_of_a_killed_write_are_swept(tmp_path):
    (tmp_path / ".metrics.json.abc.tmp").write_text("partial")
    write_json(tmp_path / "metrics.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 != 0o600


def test_read_names_file_column_and_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "verdicts.parquet"
    with pytest.raises(RecordError, match="missing"):
        read_table(path, "verdicts")
    pq.write_table(pa.table({"prompt_id": ["a"]}), path)
    with pytest.raises(RecordError, match="missing column 'sample_idx'"):
        read_table(path, "verdicts")
    pq.write_table(pa.table({"prompt_id": ["a", None], "n": [1, 2]}), tmp_path / "a.parquet")
    with pytest.raises(RecordError, match="row 1: field 'prompt_id' is null"):
        read_table(tmp_path / "a.parquet", "allocation")
    path.write_text("not parquet")
    with pytest.raises(RecordError, match="not a readable parquet file"):
        read_table(path, "verdicts")


def test_samples_keep_their_ids_and_lengths_agree(tmp_path):
    path = tmp_path / "samples.parquet"
    row = {"prompt_id": "a", "sample_idx": 0, "prompt": "q\n", "completion": "ab",
           "num_tokens": 3, "finished": True, "prompt_ids": [1, 70], "completion_ids": [10, 11, 2]}
    write_table(path, "samples", [row])
    assert read_table(path, "samples")["completion_ids"] == [[10, 11, 2]]
    write_table(path, "samples", [row, {**row, "sample_idx": 1, "num_tokens": 2}])
    with pytest.raises(RecordError, match="row 1: field 'num_tokens' is 2, but 'completion_ids' "
                                          "holds 3 ids"):
        read_table(path, "samples")

"""`cotflow show`: any artifact as text (parquet as a table, JSON pretty, a policy's config)."""

from __future__ import annotations

import json
from pathlib import Path


def show(path: Path, *, limit: int = 20) -> str:
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():
        cfg = json.loads((path / "config.json").read_text())
        keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")
        return f"{path}: policy " + ", ".join(f"{k}={cfg.get(k)}" for k in keys)
    if not path.is_file():
        raise ValueError(f"{path}: no such artifact")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        head = table.slice(0, limit).to_pandas()
        with _wide():
            body = head.to_string(max_colwidth=60) if len(head) else "(no rows)"
        return f"{path}: {table.num_rows} rows x {table.num_columns} columns\n{body}"
    if path.suffix == ".json":
        return json.dumps(json.loads(path.read_text()), indent=2, sort_keys=True)
    raise ValueError(f"{path}: cotflow show reads .parquet, .json and policy folders")


def _wide():
    import pandas as pd

    return pd.option_context("display.width", 200, "display.max_columns", 20)

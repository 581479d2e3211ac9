"""critique: natural-language critiques and refinements of failed samples (Critique-GRPO).

RAFT iterations use none: the stage writes an empty, valid critiques.parquet at once.
"""

from __future__ import annotations

from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import write_table


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    write_table(it.critiques, "critiques", [])
    return {"critiques": 0}, {}

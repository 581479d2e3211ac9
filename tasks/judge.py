"""judge: judge scores and preference pairs (VerIPO's rollout-aware verifier, DPO).

RAFT iterations use none: the stage writes an empty, valid judgements.parquet at once.
"""

from __future__ import annotations

from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import write_table


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    write_table(it.judgements, "judgements", [])
    return {"pairs": 0}, {}

"""allocate: which training prompts this iteration samples, and how many samples each.

uniform: `allocate.prompts_per_iteration` prompts drawn without replacement (seeded by the
iteration), `allocate.n` samples each. Output: allocation.parquet (prompt_id, n).
"""

from __future__ import annotations

import random
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table, write_table


def choose_prompts(ids: list[str], count: int, seed: int, key: str) -> list[str]:
    """A seeded draw that differs per iteration and is stable across reruns."""
    if count > len(ids):
        raise ValueError(f"allocate.prompts_per_iteration={count} exceeds the {len(ids)} "
                         "training problems")
    return random.Random(f"{seed}/{key}").sample(ids, count)


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    a = cfg.allocate
    ids = read_table(layout.train_set, "problems")["id"]
    chosen = choose_prompts(ids, a.prompts_per_iteration, cfg.seed, it.key)
    write_table(it.allocation, "allocation", {"prompt_id": chosen, "n": [a.n] * len(chosen)})
    return {"prompts": len(chosen), "samples": a.n * len(chosen)}, {}

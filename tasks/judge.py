"""judge: preference pairs, by the iteration's recipe (cotflow/recipes), from verified
rollouts. A recipe with a `judge` (dpo: a correct rollout chosen over an incorrect one of
the same prompt) returns (chosen, rejected) pairs; for the others the stage writes an
empty, valid judgements.parquet at once.
"""

from __future__ import annotations

from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.recipes import recipe_for
from cotflow.records import read_table, write_table


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from cotflow.rollouts import rollouts
    from tasks.common import iteration_seed

    algo = cfg.algorithm(it.key)
    judge = recipe_for(algo.kind).judge
    if judge is None:
        write_table(it.judgements, "judgements", [])
        return {"pairs": 0}, {}
    rows = rollouts(read_table(it.samples, "samples"), read_table(it.verdicts, "verdicts"))
    pairs = judge(algo, rows, iteration_seed(cfg, it.key))
    write_table(it.judgements, "judgements", {
        "prompt_id": [rows[c].prompt_id for c, _ in pairs],
        "chosen_idx": [rows[c].sample_idx for c, _ in pairs],
        "rejected_idx": [rows[r].sample_idx for _, r in pairs],
        "score": [rows[c].reward - rows[r].reward for c, r in pairs],
    })
    return {"pairs": len(pairs), "prompts_paired": len({rows[c].prompt_id for c, _ in pairs})}, {}

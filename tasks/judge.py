"""judge: preference pairs for DPO iterations, built from verified rollouts.

A dpo iteration pairs, within each prompt's group, a correct sample (chosen) with an
incorrect one (rejected), at most `max_pairs_per_prompt` pairs per prompt. Other iteration
types write an empty, valid judgements.parquet at once. (VerIPO's rollout-aware verifier
would score pairs here too.)
"""

from __future__ import annotations

from typing import Any

from cotflow.algorithm_config import DpoAlgorithm
from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table, write_table


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from cotflow.algorithms.dpo import build_pairs
    from tasks.common import iteration_seed

    algo = cfg.algorithm(it.key)
    if not isinstance(algo, DpoAlgorithm):
        write_table(it.judgements, "judgements", [])
        return {"pairs": 0}, {}
    samples = read_table(it.samples, "samples")
    verdicts = read_table(it.verdicts, "verdicts")
    if samples["sample_idx"] != verdicts["sample_idx"]:
        raise ValueError(f"{it.verdicts} does not line up with {it.samples} (rerun verify)")
    ids, rewards = verdicts["prompt_id"], verdicts["reward"]
    pairs = build_pairs(ids, rewards, max_pairs_per_prompt=algo.max_pairs_per_prompt,
                        seed=iteration_seed(cfg, it.key))
    idx = verdicts["sample_idx"]
    write_table(it.judgements, "judgements", {
        "prompt_id": [ids[c] for c, _ in pairs],
        "chosen_idx": [idx[c] for c, _ in pairs],
        "rejected_idx": [idx[r] for _, r in pairs],
        "score": [rewards[c] - rewards[r] for c, r in pairs],
    })
    return {"pairs": len(pairs), "prompts_paired": len({ids[c] for c, _ in pairs})}, {}

"""sample: n_i completions per allocated prompt from the previous iteration's policy.

Output: samples.parquet (prompt_id, sample_idx, prompt, completion, num_tokens, finished).
"""

from __future__ import annotations

from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table, write_table


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.sampler import make_sampler
    from tasks.common import format_prompt, iteration_seed, problems_by_id

    s = cfg.sample
    allocation = read_table(it.allocation, "allocation")
    problems = problems_by_id(layout.train_set)
    rows: list[dict[str, Any]] = []
    for pid, n in zip(allocation["prompt_id"], allocation["n"], strict=True):
        if pid not in problems:
            raise ValueError(f"{it.allocation}: prompt_id {pid!r} is not in {layout.train_set}")
        prompt = format_prompt(cfg, problems[pid]["question"])
        rows.extend({"prompt_id": pid, "sample_idx": j, "prompt": prompt} for j in range(n))
    seed = iteration_seed(cfg, it.key)
    with make_sampler(s.backend, it.prev_policy, batch_size=s.batch_size, threads=cfg.threads,
                      serving=cfg.serving, seed=seed) as sampler:
        completions = sampler.generate([r["prompt"] for r in rows],
                                       max_new_tokens=s.max_new_tokens,
                                       temperature=s.temperature, top_p=s.top_p, seed=seed)
    for row, c in zip(rows, completions, strict=True):
        row.update(completion=c.text, num_tokens=c.num_tokens, finished=c.finished)
    write_table(it.samples, "samples", rows)
    total = sum(r["num_tokens"] for r in rows)
    stats = {"completions": len(rows), "tokens": total,
             "mean_tokens": round(total / max(len(rows), 1), 4),
             "finished_fraction": round(sum(r["finished"] for r in rows) / max(len(rows), 1), 6)}
    return stats, {"sample/tokens_per_s": round(sampler.tokens_per_s, 1)}

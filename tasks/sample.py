"""sample: n_i completions per allocated prompt from the previous iteration's policy.

Output: samples.parquet (prompt_id, sample_idx, prompt, completion, num_tokens, finished).
Prompts allocated 0 samples (GVM) get no rows. `draw` is also the probe of GVM's allocate.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table, write_table


def draw(cfg: PipelineConfig, problems: dict[str, dict[str, Any]], policy: Path,
         counts: Iterable[tuple[str, int]], *, seed: int,
         where: Path) -> tuple[list[dict[str, Any]], float]:
    """`n` sample rows per (prompt_id, n) with the `sample` settings; and tokens/s.

    `where` names the file the counts came from, for the error on an unknown prompt."""
    from models.sampler import make_sampler
    from tasks.common import format_prompt

    s = cfg.sample
    rows: list[dict[str, Any]] = []
    for pid, n in counts:
        if pid not in problems:
            raise ValueError(f"{where}: prompt_id {pid!r} is not among the training problems")
        prompt = format_prompt(cfg, problems[pid]["question"])
        rows.extend({"prompt_id": pid, "sample_idx": j, "prompt": prompt} for j in range(n))
    if not rows:
        return rows, 0.0
    sampler = make_sampler(s.backend, policy, batch_size=s.batch_size, threads=cfg.threads)
    completions = sampler.generate([r["prompt"] for r in rows], max_new_tokens=s.max_new_tokens,
                                   temperature=s.temperature, top_p=s.top_p, seed=seed)
    for row, c in zip(rows, completions, strict=True):
        row.update(completion=c.text, num_tokens=c.num_tokens, finished=c.finished)
    return rows, sampler.tokens_per_s


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from tasks.common import iteration_seed, problems_by_id

    allocation = read_table(it.allocation, "allocation")
    rows, tokens_per_s = draw(cfg, problems_by_id(layout.train_set), it.prev_policy,
                              zip(allocation["prompt_id"], allocation["n"], strict=True),
                              seed=iteration_seed(cfg, it.key), where=it.allocation)
    write_table(it.samples, "samples", rows)
    total = sum(r["num_tokens"] for r in rows)
    stats = {"completions": len(rows), "tokens": total,
             "mean_tokens": round(total / max(len(rows), 1), 4),
             "finished_fraction": round(sum(r["finished"] for r in rows) / max(len(rows), 1), 6)}
    return stats, {"sample/tokens_per_s": round(tokens_per_s, 1)}

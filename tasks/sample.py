"""sample: n_i completions per allocated prompt from the previous iteration's policy.

With `sample.dynamic_sampling_rounds` > 0 (DAPO's dynamic sampling, specs/algorithms-b.md
§1.4) the stage grades each round with the verify stage's reward, and while fewer groups
have mixed rewards than prompts were allocated, samples fresh training prompts (the
shortfall divided by the observed share of mixed groups), up to that many extra rounds.
Every sampled group is kept in the output, so the budget spent is on record; the train
stage drops the uniform groups when its algorithm says so. The last round may overshoot.

Output: samples.parquet (prompt_id, sample_idx, prompt, completion, num_tokens, finished).
"""

from __future__ import annotations

import math
import random
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table, write_table


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.sampler import make_sampler
    from tasks.common import iteration_seed, problems_by_id

    s = cfg.sample
    allocation = read_table(it.allocation, "allocation")
    problems = problems_by_id(layout.train_set)
    for pid in allocation["prompt_id"]:
        if pid not in problems:
            raise ValueError(f"{it.allocation}: prompt_id {pid!r} is not in {layout.train_set}")
    budget = [(pid, n) for pid, n in zip(allocation["prompt_id"], allocation["n"], strict=True)
              if n > 0]
    sampler = make_sampler(s.backend, it.prev_policy, batch_size=s.batch_size,
                           threads=cfg.threads)
    seed = iteration_seed(cfg, it.key)
    rows = _draw(cfg, sampler, problems, budget, seed)
    stats: dict[str, Any] = {}
    if s.dynamic_sampling_rounds:
        rows, stats = _refill(cfg, sampler, problems, budget, rows, seed)
    write_table(it.samples, "samples", rows)
    total = sum(r["num_tokens"] for r in rows)
    stats = {"completions": len(rows), "tokens": total,
             "mean_tokens": round(total / max(len(rows), 1), 4),
             "finished_fraction": round(sum(r["finished"] for r in rows) / max(len(rows), 1), 6),
             **stats}
    return stats, {"sample/tokens_per_s": round(sampler.tokens_per_s, 1)}


def _draw(cfg: PipelineConfig, sampler, problems: dict[str, dict[str, Any]],
          budget: list[tuple[str, int]], seed: int) -> list[dict[str, Any]]:
    from tasks.common import format_prompt

    rows: list[dict[str, Any]] = []
    for pid, n in budget:
        prompt = format_prompt(cfg, problems[pid]["question"])
        rows.extend({"prompt_id": pid, "sample_idx": j, "prompt": prompt} for j in range(n))
    s = cfg.sample
    completions = sampler.generate([r["prompt"] for r in rows], max_new_tokens=s.max_new_tokens,
                                   temperature=s.temperature, top_p=s.top_p, seed=seed)
    for row, c in zip(rows, completions, strict=True):
        row.update(completion=c.text, num_tokens=c.num_tokens, finished=c.finished)
    return rows


def _refill(cfg: PipelineConfig, sampler, problems: dict[str, dict[str, Any]],
            budget: list[tuple[str, int]], rows: list[dict[str, Any]],
            seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from cotflow.algorithms.advantages import informative_groups
    from cotflow.verify.pool import VerifierPool
    from tasks.verify import rewards_of

    v = cfg.verify
    target = len(budget)
    group_size = max(n for _, n in budget) if budget else 0
    used = {pid for pid, _ in budget}
    unused = sorted(set(problems) - used)
    rewards: list[float] = []
    rounds = 0
    with VerifierPool(workers=v.workers, timeout_s=v.timeout_s, memory_mb=v.memory_mb) as pool:
        def grade(new: list[dict[str, Any]]) -> None:
            golds = [problems[r["prompt_id"]]["answer"] for r in new]
            rewards.extend(rewards_of(v, pool, golds, [r["completion"] for r in new])[1])

        grade(rows)
        while rounds < cfg.sample.dynamic_sampling_rounds and unused and group_size:
            mixed = len(informative_groups(rewards, [r["prompt_id"] for r in rows]))
            if mixed >= target:
                break
            sampled = len({r["prompt_id"] for r in rows})
            share = max(mixed / sampled, 1.0 / sampled)
            count = min(len(unused), math.ceil((target - mixed) / share))
            rounds += 1
            fresh = random.Random(f"{seed}/refill/{rounds}").sample(unused, count)
            unused = sorted(set(unused) - set(fresh))
            new = _draw(cfg, sampler, problems, [(pid, group_size) for pid in fresh],
                        seed + 100_000 * rounds)
            grade(new)
            rows.extend(new)
    mixed = len(informative_groups(rewards, [r["prompt_id"] for r in rows]))
    return rows, {"refill_rounds": rounds, "mixed_groups": mixed,
                  "prompts_sampled": len({r["prompt_id"] for r in rows})}

"""sample: n_i completions per allocated prompt from the previous iteration's policy.

Prompts allocated 0 samples (GVM) get no rows. `draw` is also the probe of GVM's allocate.

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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table, write_table


def draw(cfg: PipelineConfig, problems: dict[str, dict[str, Any]], policy: Path,
         counts: Iterable[tuple[str, int]], *, seed: int, where: Path,
         sampler: Any = None) -> tuple[list[dict[str, Any]], float]:
    """`n` sample rows per (prompt_id, n) with the `sample` settings; and tokens/s.

    `where` names the file the counts came from, for the error on an unknown prompt;
    `sampler` reuses a loaded sampler of `policy` (else one is made)."""
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
    if sampler is None:
        with make_sampler(s.backend, policy, batch_size=s.batch_size, threads=cfg.threads,
                          serving=cfg.serving, seed=seed) as own:
            return _complete(cfg, rows, own, seed)
    return _complete(cfg, rows, sampler, seed)


def _complete(cfg: PipelineConfig, rows: list[dict[str, Any]], sampler: Any,
              seed: int) -> tuple[list[dict[str, Any]], float]:
    s = cfg.sample
    completions = sampler.generate([r["prompt"] for r in rows], max_new_tokens=s.max_new_tokens,
                                   temperature=s.temperature, top_p=s.top_p, seed=seed)
    for row, c in zip(rows, completions, strict=True):
        row.update(completion=c.text, num_tokens=c.num_tokens, finished=c.finished)
    return rows, sampler.tokens_per_s


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.sampler import make_sampler
    from tasks.common import iteration_seed, problems_by_id

    s = cfg.sample
    allocation = read_table(it.allocation, "allocation")
    problems = problems_by_id(layout.train_set)
    budget = [(pid, n) for pid, n in zip(allocation["prompt_id"], allocation["n"], strict=True)
              if n > 0]
    seed = iteration_seed(cfg, it.key)
    stats: dict[str, Any] = {}
    # One sampler (for vllm: one server) for the stage, released when it ends.
    with make_sampler(s.backend, it.prev_policy, batch_size=s.batch_size, threads=cfg.threads,
                      serving=cfg.serving, seed=seed) as sampler:
        rows, tokens_per_s = draw(cfg, problems, it.prev_policy, budget, seed=seed,
                                  where=it.allocation, sampler=sampler)
        if s.dynamic_sampling_rounds:
            rows, stats = _refill(cfg, sampler, problems, it, budget, rows, seed)
    write_table(it.samples, "samples", rows)
    total = sum(r["num_tokens"] for r in rows)
    stats = {"completions": len(rows), "tokens": total,
             "mean_tokens": round(total / max(len(rows), 1), 4),
             "finished_fraction": round(sum(r["finished"] for r in rows) / max(len(rows), 1), 6),
             **stats}
    return stats, {"sample/tokens_per_s": round(sampler.tokens_per_s or tokens_per_s, 1)}


def _refill(cfg: PipelineConfig, sampler, problems: dict[str, dict[str, Any]],
            it: IterationLayout, budget: list[tuple[str, int]], rows: list[dict[str, Any]],
            seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from cotflow.algorithms.advantages import informative_groups
    from cotflow.verify.pool import VerifierPool
    from tasks.verify import rewards_of

    v = cfg.verify
    target = len(budget)
    group_size = max((n for _, n in budget), default=0)
    unused = sorted(set(problems) - {pid for pid, _ in budget})
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
            new, _ = draw(cfg, problems, it.prev_policy, [(pid, group_size) for pid in fresh],
                          seed=seed + 100_000 * rounds, where=it.allocation, sampler=sampler)
            grade(new)
            rows.extend(new)
    mixed = len(informative_groups(rewards, [r["prompt_id"] for r in rows]))
    return rows, {"refill_rounds": rounds, "mixed_groups": mixed,
                  "prompts_sampled": len({r["prompt_id"] for r in rows})}

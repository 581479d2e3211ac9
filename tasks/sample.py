"""sample: n_i completions per allocated prompt from the previous iteration's policy.

Prompts allocated 0 samples (GVM) get no rows. Drawing (models/drawing.py) is shared with
GVM's probe in allocate.

With `sample.dynamic_sampling_rounds` > 0 (DAPO's dynamic sampling, specs/algorithms-b.md
§1.4) the stage grades each round with the verify stage's reward, and while fewer groups
are mixed (some samples correct, some not) than prompts were allocated, samples fresh
training prompts (the shortfall divided by the observed share of mixed groups), up to that
many extra rounds.
Every sampled group is kept in the output, so the budget spent is on record; the train
stage drops the uniform groups when its algorithm says so. The last round may overshoot.

When the iteration's algorithm kind is spo, the stage also draws SPO-chain's Monte Carlo
values (models/mc_values.py, `sample.segments`): per response, its token probabilities,
segment boundaries and the value of the state before each, from N continuations each.

When the kind is spo-tree, each allocated prompt gets one SPO-tree (models/trees.py,
`sample.tree`) instead of n samples: its leaves are the samples, its structure tree.parquet.

Outputs: samples.parquet (prompt_id, sample_idx, prompt, completion, num_tokens, finished,
prompt_ids, completion_ids: the token ids as sampled); values.parquet and
continuations.parquet (empty unless spo); tree.parquet (empty unless spo-tree).
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
    from models.drawing import draw
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
        kind = cfg.algorithm(it.key).kind
        values: list[dict[str, Any]] = []
        continuations: list[dict[str, Any]] = []
        tree: list[dict[str, Any]] = []
        if kind == "spo-tree":  # one tree per allocated prompt, its leaves the samples
            from models.trees import sample_trees

            rows, tree, stats = sample_trees(cfg, problems, [pid for pid, _ in budget],
                                             it.prev_policy, sampler, seed=seed)
            tokens_per_s = sampler.tokens_per_s
        else:
            rows, tokens_per_s = draw(cfg, problems, it.prev_policy, budget, seed=seed,
                                      where=it.allocation, sampler=sampler)
        if s.dynamic_sampling_rounds and kind != "spo-tree":
            rows, stats = _refill(cfg, sampler, problems, it, budget, rows, seed)
        if kind == "spo":
            from models.mc_values import mc_values

            values, continuations, mc = mc_values(cfg, problems, rows, it.prev_policy, sampler,
                                                  seed=seed)
            stats.update(mc)
    # The side tables first: samples.parquet, written last, marks the stage complete.
    write_table(it.values, "values", values)
    write_table(it.continuations, "continuations", continuations)
    write_table(it.tree, "tree", tree)
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
    from cotflow.verify.rewards import is_correct
    from cotflow.verify.scoring import rewards_of
    from models.drawing import draw

    v = cfg.verify
    target = len(budget)
    group_size = max((n for _, n in budget), default=0)
    unused = sorted(set(problems) - {pid for pid, _ in budget})
    correct: list[float] = []  # 1.0 per correct sample: a group is mixed by correctness
    rounds = 0
    with VerifierPool(workers=v.workers, timeout_s=v.timeout_s, memory_mb=v.memory_mb) as pool:
        def grade(new: list[dict[str, Any]]) -> None:
            golds = [problems[r["prompt_id"]]["answer"] for r in new]
            rewards = rewards_of(v, pool, golds, [r["completion"] for r in new])[1]
            correct.extend(float(is_correct(r)) for r in rewards)

        grade(rows)
        while rounds < cfg.sample.dynamic_sampling_rounds and unused and group_size:
            mixed = len(informative_groups(correct, [r["prompt_id"] for r in rows]))
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
    mixed = len(informative_groups(correct, [r["prompt_id"] for r in rows]))
    return rows, {"refill_rounds": rounds, "mixed_groups": mixed,
                  "prompts_sampled": len({r["prompt_id"] for r in rows})}

"""verify: grade every completion against its reference answer in a worker pool with a hard
per-answer time limit. Output: verdicts.parquet (verdict, reward, extracted answer).

`verdict` judges the final answer alone. `reward` is 1 for a correct answer, except that with
`verify.check_steps` a correct answer reached through a wrong `x op y = z` step earns 0: on
the built-in task a tiny model often lands on the right number through two errors that
cancel, and training on such samples teaches it wrong arithmetic. The grading itself is
cotflow/verify/scoring.py's, shared with allocate's GVM probe and sample's refill.
Stats also give the reward and completion length per difficulty level, and in TON's format
(verify.format think) the skip ratio per level: where the policy drops its working.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from cotflow.algorithms.ton import completion_stats, per_level
from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table, write_table
from cotflow.verify.rewards import is_correct
from cotflow.verify.scoring import grade_rewards


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from tasks.common import problems_by_id

    samples = read_table(it.samples, "samples")
    problems = problems_by_id(layout.train_set)
    golds = [problems[pid]["answer"] for pid in samples["prompt_id"]]
    t0 = time.perf_counter()
    grades, rewards, wrong_steps = grade_rewards(cfg.verify, golds, samples["completion"])
    seconds = time.perf_counter() - t0
    write_table(it.verdicts, "verdicts", {
        "prompt_id": samples["prompt_id"], "sample_idx": samples["sample_idx"],
        "verdict": [g.verdict for g in grades], "reward": rewards,
        "extracted": [g.extracted for g in grades],
    })
    counts = Counter(g.verdict for g in grades)
    solved = {pid for pid, r in zip(samples["prompt_id"], rewards, strict=True)
              if is_correct(r)}
    n = max(len(grades), 1)
    prompts = max(len(set(samples["prompt_id"])), 1)
    levels = [problems[pid]["difficulty"] for pid in samples["prompt_id"]]
    stats = {"mean_reward": round(sum(rewards) / n, 6),
             "wrong_step_fraction": round(sum(wrong_steps) / n, 6),
             "prompts_solved_fraction": round(len(solved) / prompts, 6),
             **{f"{k}_fraction": round(counts[k] / n, 6)
                for k in ("correct", "incorrect", "unparseable", "timeout")},
             **per_level(levels, rewards, "mean_reward"),
             **completion_stats(levels, samples["completion"], samples["num_tokens"],
                                think=cfg.verify.format == "think")}
    return stats, {"verify/answers_per_s": round(len(grades) / seconds, 1) if seconds else 0.0}


"""SPO-tree's sampling (specs/algorithms-b.md §2.4): per prompt, a tree whose nodes are
segments sampled i.i.d. from the policy given their parent's full text.

Depth d < D−1 nodes hold at most M (`sample.tree.segment_tokens`) new tokens; the last
level's run to the end of the sample budget. A node that stops on its own is a leaf; so is a
node cut off with no budget left, or at the last level (unfinished: reward 0). Each leaf's
full completion (its ancestors' segments and its own) is a row of samples.parquet, so the
verify stage grades it like any sample; tree.parquet keeps the structure.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotflow.config import PipelineConfig


@dataclass
class _Open:
    """A node whose children are still to be drawn."""

    prompt_id: str
    node: int  # -1: the root
    prompt: str
    prompt_ids: list[int] = field(default_factory=list)
    prefix: list[int] = field(default_factory=list)  # completion ids so far


def level_seed(seed: int, depth: int, budget: int) -> int:
    return random.Random(f"{seed}/tree/{depth}/{budget}").randrange(2**31)


def sample_trees(cfg: PipelineConfig, problems: dict[str, dict[str, Any]],
                 prompt_ids: list[str], policy: Path, sampler: Any, *, seed: int
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(samples rows: one per leaf, tree rows: one per node, stats) for one tree per
    prompt of `prompt_ids`."""
    from transformers import AutoTokenizer

    from models.prompts import PromptFormat

    s, t = cfg.sample, cfg.sample.tree
    tokenizer = AutoTokenizer.from_pretrained(str(policy))
    fmt = PromptFormat(cfg.data, tokenizer)
    frontier = [_Open(pid, -1, fmt.text(problems[pid]["question"]))
                for pid in prompt_ids]
    samples: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    next_node: dict[str, int] = defaultdict(int)
    leaves: dict[str, int] = defaultdict(int)
    for depth, width in enumerate(t.branching):
        last = depth == len(t.branching) - 1
        by_budget: dict[int, list[_Open]] = defaultdict(list)
        for parent in frontier:
            left = s.max_new_tokens - len(parent.prefix)
            by_budget[left if last else min(t.segment_tokens, left)].extend([parent] * width)
        frontier = []
        for budget, parents in sorted(by_budget.items()):
            prompts = (fmt.for_sampler([p.prompt for p in parents]) if depth == 0
                       else [p.prompt_ids + p.prefix for p in parents])
            got = sampler.generate(prompts, max_new_tokens=budget, temperature=s.temperature,
                                   top_p=s.top_p, seed=level_seed(seed, depth, budget))
            for parent, c in zip(parents, got, strict=True):
                root_ids = c.prompt_ids if depth == 0 else parent.prompt_ids
                prefix = parent.prefix + c.token_ids
                node = next_node[parent.prompt_id]
                next_node[parent.prompt_id] += 1
                leaf = c.finished or last or len(prefix) >= s.max_new_tokens
                row = {"prompt_id": parent.prompt_id, "node": node, "parent": parent.node,
                       "depth": depth, "token_ids": c.token_ids, "leaf": -1}
                if leaf:
                    row["leaf"] = leaves[parent.prompt_id]
                    leaves[parent.prompt_id] += 1
                    samples.append({
                        "prompt_id": parent.prompt_id, "sample_idx": row["leaf"],
                        "prompt": parent.prompt,
                        "completion": tokenizer.decode(prefix, skip_special_tokens=True),
                        "num_tokens": len(prefix), "finished": c.finished,
                        "prompt_ids": root_ids, "completion_ids": prefix})
                else:
                    frontier.append(_Open(parent.prompt_id, node, parent.prompt, root_ids,
                                          prefix))
                nodes.append(row)
    # Rows in (prompt, leaf) and (prompt, node) order: independent of how requests grouped.
    order = {pid: i for i, pid in enumerate(prompt_ids)}
    samples.sort(key=lambda r: (order[r["prompt_id"]], r["sample_idx"]))
    nodes.sort(key=lambda r: (order[r["prompt_id"]], r["node"]))
    inner = sum(r["leaf"] < 0 for r in nodes)
    return samples, nodes, {"trees": len(prompt_ids), "tree_nodes": len(nodes),
                            "mc_samples": inner,
                            "leaves_per_tree": round(len(samples) / max(len(prompt_ids), 1), 4)}

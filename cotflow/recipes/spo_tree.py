"""spo-tree: SPO-tree (Guo et al., arXiv 2505.23564; specs/algorithms-b.md §2.4).

The sample stage has drawn one tree per prompt (models/trees.py): each node a segment
sampled from its parent's full text, each leaf a graded sample. This recipe:
1. leaf values: the SPO reward of the leaf's full completion (1 correct and finished, 0
   wrong or cut off, −2 for more than one answer marker); an inner node's value is the mean
   of its children's values (the code's rule, not the mean over its leaves);
2. one example per parent→child edge: the parent's full text as the prompt, the child's
   segment as the completion, A = V(child) − V(parent) on each of its tokens; edges with
   A = 0 dropped; at most `max_edges_per_question` per prompt, drawn at random;
3. the objective is SPO-chain's (cotflow/recipes/spo.py): probability mask from the
   stage-start policy, whitening, clipped loss, k3 KL.
The paper also replays unused edges for up to 8 iterations (cotflow/algorithms/spo.py's
ReplayBuffer); here each iteration trains on its own trees' edges only.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Literal

from cotflow.config_types import ClipEps, NonNegFloat, PosInt, Section
from cotflow.recipes.base import Example, Inputs, Recipe, TrainingPlan


class Settings(Section):
    kind: Literal["spo-tree"]
    clip_eps: ClipEps
    kl_coef: NonNegFloat
    reference: Literal["prev", "base"]
    whiten: bool
    max_edges_per_question: PosInt  # the paper: 32


def build_trees(table: dict[str, list], leaf_values: dict[tuple[str, int], float]):
    """{prompt_id: root TreeNode} from tree.parquet's rows and each leaf's value."""
    from cotflow.algorithms.spo import TreeNode

    roots: dict[str, TreeNode] = defaultdict(TreeNode)
    made: dict[tuple[str, int], TreeNode] = {}
    rows = sorted(zip(table["prompt_id"], table["node"], table["parent"], table["token_ids"],
                      table["leaf"], strict=True), key=lambda r: (r[0], r[1]))
    for pid, node, parent, ids, leaf in rows:
        if leaf >= 0 and (pid, leaf) not in leaf_values:
            raise ValueError(f"tree of {pid!r}: leaf sample #{leaf} has no verdict "
                             "(rerun the sample and verify stages of this iteration)")
        n = TreeNode(tuple(ids), leaf_values[(pid, leaf)] if leaf >= 0 else None)
        made[(pid, node)] = n
        if parent < 0:
            roots[pid].children.append(n)
        elif (pid, parent) in made:
            made[(pid, parent)].children.append(n)
        else:
            raise ValueError(f"tree of {pid!r}: node {node} names parent {parent}, "
                             "which comes later or not at all")
    return dict(roots)


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    from cotflow.algorithms.spo import answer_markers, spo_reward, tree_edges
    from cotflow.recipes.spo import objective

    if inputs.segments is None:
        raise ValueError("spo-tree needs sample.segments (its ρ)")
    rows = {(r.prompt_id, r.sample_idx): r for r in inputs.rollouts}
    values = {k: spo_reward(r.correct, r.finished, answer_markers(r.completion))
              for k, r in rows.items()}
    roots = build_trees(inputs.tables.get("tree", {}), values)
    prompt_ids = {r.prompt_id: r.prompt_ids for r in inputs.rollouts}
    examples, edges_all = [], 0
    for pid, root in roots.items():
        edges = tree_edges(root)
        edges_all += len(edges)
        if len(edges) > s.max_edges_per_question:
            rng = random.Random(f"spo-tree/{pid}")  # the same draw on a rerun
            keep = sorted(rng.sample(range(len(edges)), s.max_edges_per_question))
            edges = [edges[i] for i in keep]
        examples.extend(Example(tuple(prompt_ids[pid]) + e.context, e.segment, 0.0,
                                {"spo_advantages": [e.advantage] * len(e.segment)})
                        for e in edges if e.segment)
    stats = {"trees": len(roots), "edges_nonzero": edges_all, "edges_trained": len(examples),
             "mean_abs_advantage": round(sum(abs(ex.extras["spo_advantages"][0])
                                             for ex in examples) / max(len(examples), 1), 6)}
    return TrainingPlan(examples, objective(s, inputs.segments.rho), old=True,
                        reference=s.reference if s.kl_coef else None, stats=stats)


RECIPE = Recipe("spo-tree", Settings, plan, reads=("tree",))

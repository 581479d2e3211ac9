"""Recipes: one module per algorithm kind, the one place that says how verified rollouts
become training examples and which objective trains them.

    raft      raft.py            SFT on correct rollouts
    raft++    raft_plus_plus.py  clipped surrogate, A = 1[correct], k3 KL
    grpo      grpo.py            GRPO, Dr.GRPO, DAPO, SEED-GRPO (settings of one recipe)
    nft       nft.py             negative-aware fine-tuning
    dpo       dpo.py             DPO on the judge stage's pairs
    critique-grpo  critique_grpo.py  GRPO over initial responses + a critique-guided refinement
    veripo    veripo.py          VerIPO: DPO on a rollout-aware verifier's pairs
    spo       spo.py             SPO-chain: segment advantages from the sample stage's MC values
    spo-tree  spo_tree.py        SPO-tree: one example per edge of the sample stage's trees
    ton       ton.py             GRPO on accuracy + format rewards (TON's think-or-not)

A params.yaml `algorithms` entry names its `kind`; the recipe's `Settings` validate it
(cotflow/algorithm_config.py builds the union from this registry). Adding a kind is a
module here with `RECIPE`, its line below, and its params entry.

How methods that act at different points compose in one iteration:
- allocation (GVM) is the allocate stage's `allocate.method`, under any recipe: recipes see
  only the rollouts it paid for;
- rollouts added to a group (Critique-GRPO's refinements) come from the critique stage's
  artifact and join `Inputs.rollouts` as members of their prompt's group (`refinement`),
  so group filters and advantages see them like any rollout, and the recipe's objective
  weighs them (an extra per example);
- group filters (DAPO) and advantage scales (SEED-GRPO) are steps of the group recipe
  (grpo.py steps 2 and 4) switched by settings, so GVM × SEED × DAPO is one grpo entry
  with `semantic_entropy` and `drop_uniform_groups` set, under `allocate.method: gvm`.
The trainers know no recipe: a plan's examples carry their tensors and the objective
reads what it needs (advantages, extras, old and reference log-probs, the step's size).
"""

from __future__ import annotations

from cotflow.recipes import (
    critique_grpo,
    dpo,
    grpo,
    nft,
    raft,
    raft_plus_plus,
    spo,
    spo_tree,
    ton,
    veripo,
)
from cotflow.recipes.base import Recipe

RECIPES: dict[str, Recipe] = {r.kind: r for r in (
    raft.RECIPE, raft_plus_plus.RECIPE, grpo.RECIPE, nft.RECIPE, dpo.RECIPE,
    critique_grpo.RECIPE, veripo.RECIPE, spo.RECIPE, spo_tree.RECIPE, ton.RECIPE)}


def recipe_for(kind: str) -> Recipe:
    if kind not in RECIPES:
        raise ValueError(f"algorithm kind {kind!r}: no recipe (have {', '.join(RECIPES)})")
    return RECIPES[kind]

"""ton: TON's GRPO (Think or Not?, arXiv 2505.16854; specs/algorithms-b.md §3.4).

GRPO (grpo.py, steps 2-5, every grpo setting available) on TON's reward: accuracy (the
verify stage's reward, i.e. its grader on the <answer> content under verify.format think)
times `accuracy_weight`, plus `format_weight` when the completion fully matches
`<think>.*?</think>\\s*<answer>.*?</answer>` (DOTALL). The empty thought passes the format:
nothing rewards or punishes skipping itself. params.yaml's `ton` entry takes TRL 0.14's
conventions, which TON trains with: sample std + 1e-4, seq-mean-token-mean, k3 KL at 0.04
to the frozen initial model. The thought-dropout warm start that makes skipping reachable
is the warmstart stage's (warmstart.thought_dropout, `cotflow preset ton`).
"""

from __future__ import annotations

from typing import Literal

from cotflow.config_types import NonNegFloat
from cotflow.recipes import grpo
from cotflow.recipes.base import Inputs, Recipe, TrainingPlan


class Settings(grpo.Settings):
    kind: Literal["ton"]  # type: ignore[assignment]
    accuracy_weight: NonNegFloat
    format_weight: NonNegFloat


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    from cotflow.algorithms.ton import share, ton_rewards
    from cotflow.verify.think import format_ok, skipped

    rows = inputs.rollouts
    accuracy = grpo.shaped_rewards(rows, reward_incorrect=s.reward_incorrect,
                                   overlong_cache=s.overlong_cache,
                                   max_new_tokens=inputs.max_new_tokens)
    formatted = [format_ok(r.completion) for r in rows]
    rewards = ton_rewards(accuracy, formatted, accuracy_weight=s.accuracy_weight,
                          format_weight=s.format_weight)
    out = grpo.plan_on(s, inputs, rewards)
    out.stats.update(format_fraction=round(share(formatted), 6),
                     skip_ratio=round(share([skipped(r.completion) for r in rows]), 6))
    return out


RECIPE = Recipe("ton", Settings, plan)

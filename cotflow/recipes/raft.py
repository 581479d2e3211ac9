"""raft: RAFT, rejection-sampling fine-tuning (Dong et al., arXiv 2304.06767; specs/
algorithms-b.md §5.2).

Examples: the correct rollouts (the verify reward says which), optionally without repeats
of the same completion of a prompt (`train.dedup`). Objective: SFT on their tokens,
token-mean over the optimizer step.

Deviation, measured: the spec's loss is a token-mean over *all* rollouts' tokens with A = 0
on incorrect ones (§5.6). Here incorrect rollouts are left out, so a step is SFT on accepted
tokens as classic RAFT; their A = 0 tokens would only shrink every step by the acceptance
rate. The default pipeline (+18 points over 5 iterations) was measured this way.
"""

from __future__ import annotations

from typing import Literal

from cotflow.config_types import Section
from cotflow.recipes.base import Inputs, Recipe, TrainingPlan, rollout_example
from cotflow.rollouts import Rollout, zero_variance_share_of


class Settings(Section):
    kind: Literal["raft"]


def accepted(rows: list[Rollout], *, dedup: bool) -> list[Rollout]:
    """Correct rollouts in order, optionally without repeats of the same completion."""
    seen: set[tuple[str, tuple[int, ...]]] = set()
    out = []
    for r in rows:
        if not r.correct or (dedup and (r.prompt_id, r.completion_ids) in seen):
            continue
        seen.add((r.prompt_id, r.completion_ids))
        out.append(r)
    return out


def objective(s: Settings | None = None):
    """SFT token-mean over the optimizer step (A = 1 on every example)."""
    from cotflow.algorithms.losses import raft_loss
    from cotflow.recipes.terms import metrics

    def raft_objective(tb):
        return raft_loss(tb.logprobs, tb.advantages, tb.mask, tokens=tb.step.tokens), metrics(tb)
    return raft_objective


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    examples = [rollout_example(r) for r in accepted(inputs.rollouts, dedup=inputs.dedup)]
    return TrainingPlan(examples, objective(s), old=False, stats={
        "zero_variance_share": zero_variance_share_of(inputs.rollouts)})


RECIPE = Recipe("raft", Settings, plan)

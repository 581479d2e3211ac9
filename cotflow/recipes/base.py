"""The shape of a recipe, and what the trainers and recipes exchange.

A recipe turns an iteration's verified rollouts into a `TrainingPlan`: the examples to
train (token ids as sampled, an advantage, per-sequence extras) and the objective that
trains them. The trainers (models/torch_trainer.py, models/deepspeed_trainer.py) know no
algorithm: they cut the examples into optimizer steps and micro-batches, run the policy,
and hand the objective a `TokenBatch`. Import-light: torch only for type checking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from cotflow.rollouts import Rollout


@dataclass(frozen=True)
class Example:
    """One training sequence: the prompt's and the completion's token ids, and what the
    objective reads of it. `extras` values are per sequence (a float) or per completion
    token (a sequence as long as completion_ids)."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]  # as sampled: EOS last only if the model produced it
    advantage: float = 1.0
    extras: Mapping[str, float | Sequence[float]] = field(default_factory=dict)


def rollout_example(r: Rollout, advantage: float = 1.0, **extras: Any) -> Example:
    return Example(r.prompt_ids, r.completion_ids, advantage, extras)


@dataclass(frozen=True)
class StepSize:
    """What one optimizer step holds over all its micro-batches and ranks: the
    denominators of the aggregation modes (so grad_accum and rank count change nothing)."""

    tokens: float  # response tokens
    sequences: float
    units: float  # units (a DPO pair is one unit of two sequences)


@dataclass
class TokenBatch:
    """One micro-batch as an objective sees it. B sequences, T positions; `mask` is 1 on
    response tokens. `old_logprobs` are the stage-start policy's (the behaviour policy of
    the samples), `ref_logprobs` the KL reference's; None when the plan did not ask."""

    logprobs: torch.Tensor  # (B, T) under the policy being trained
    logits: torch.Tensor  # (B, T, V)
    mask: torch.Tensor  # (B, T)
    advantages: torch.Tensor  # (B,)
    step: StepSize
    old_logprobs: torch.Tensor | None = None  # (B, T)
    ref_logprobs: torch.Tensor | None = None  # (B, T)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) or (B, T)


# Returns the micro-batch's share of the step's loss (the shares sum to the step's loss)
# and metrics, which the trainer averages over micro-batches.
Objective = Callable[[TokenBatch], "tuple[torch.Tensor, dict[str, float]]"]


@dataclass
class TrainingPlan:
    examples: list[Example]
    objective: Objective
    old: bool = True  # the objective reads the stage-start policy's log-probs
    reference: str | None = None  # "prev" (= old) | "base": the KL reference's log-probs
    units: list[list[int]] | None = None  # examples kept in one micro-batch; None: singles
    stats: dict[str, Any] = field(default_factory=dict)


class Services(Protocol):
    """What a recipe may ask of the stage that runs it: model and verifier work, kept out
    of the recipe so it stays pure."""

    def equivalent(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        """Whether each pair of extracted answers is mathematically equivalent."""

    def completion_logprobs(self, rows: Sequence[Rollout]) -> list[torch.Tensor]:
        """log π_old of each completion token under the stage-start policy."""


@dataclass
class Inputs:
    """What the train stage hands a recipe."""

    rollouts: list[Rollout]
    judgements: dict[str, list]
    max_new_tokens: int  # the sampling budget (Dr.GRPO's L_const, DAPO's L_max)
    dedup: bool  # train.dedup
    services: Services
    # The sample stage's side tables a recipe `reads` ("values": SPO-chain's MC values,
    # "tree": SPO-tree's trees), by name; and sample.segments, SPO's ρ and interval.
    tables: dict[str, dict[str, list]] = field(default_factory=dict)
    segments: Any = None


@dataclass
class VerifierInputs:
    """What the judge stage hands a rollout-aware verifier (VerIPO)."""

    rollouts: list[Rollout]
    # Does the rollout's answer follow from its reasoning? None: unknown.
    consistent: Callable[[Rollout], bool | None]
    encode: Callable[[str], list[int]]  # completion text -> ids as sampled (EOS last)
    max_len: int  # context: pairs whose prompt + response exceed it are dropped
    seed: int


@dataclass
class VerifierResult:
    flags: dict[str, list]  # records.SCHEMAS "flags" columns
    pairs: list[dict[str, Any]]  # records.SCHEMAS "judgements" rows
    stats: dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    """One algorithm kind: its params schema and how it trains.

    `settings` is the pydantic section of a params.yaml `algorithms` entry of this kind;
    `plan` builds the iteration's training plan; `judge`, if set, is run by the judge stage
    and returns (chosen, rejected) pairs of rollout positions; `verifier`, if set instead,
    flags every rollout and builds the pairs with their token ids (VerIPO).
    `reuses_prev_rollouts(settings)` says the iteration samples nothing and judges the
    previous iteration's rollouts. `reads` names side tables of the sample stage the plan
    reads (Inputs.tables)."""

    kind: str
    settings: type
    plan: Callable[[Any, Inputs], TrainingPlan]
    judge: Callable[[Any, list[Rollout], int], list[tuple[int, int]]] | None = None
    verifier: Callable[[Any, VerifierInputs], VerifierResult] | None = None
    reuses_prev_rollouts: Callable[[Any], bool] = lambda settings: False
    reads: tuple[str, ...] = ()

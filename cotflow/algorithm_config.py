"""params.yaml `algorithms`: one entry per named algorithm, its `kind` picking the objective
(specs/algorithms-a.md, specs/algorithms-b.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from cotflow.config_types import ClipEps, NonNegFloat, NonNegInt, PosFloat, PosInt, Section


class RaftAlgorithm(Section):
    """RAFT: SFT on accepted samples (specs/algorithms-b.md §5.2)."""

    kind: Literal["raft"]


class RaftPlusPlusAlgorithm(Section):
    """RAFT++: the clipped surrogate with A = 1[correct] against the stage-start policy."""

    kind: Literal["raft++"]
    clip_eps: ClipEps


class SemanticEntropyConfig(Section):
    """SEED-GRPO's advantage scaling (specs/algorithms-a.md §2.2)."""

    alpha: NonNegFloat
    estimator: Literal["rao", "mc"]
    weighting: Literal["frequency", "seq_prob", "mean_token_prob"]
    f: Literal["reciprocal", "linear"]


class GrpoAlgorithm(Section):
    """The GRPO family: GRPO, Dr.GRPO, DAPO, SEED-GRPO are settings of this one objective."""

    kind: Literal["grpo"]
    advantage_std: Literal["sample", "population", "none"]
    std_eps: NonNegFloat
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                      "seq-mean-token-sum-norm"]
    loss_constant: PosFloat | None  # L_const of seq-mean-token-sum-norm; null: max_new_tokens
    eps_low: ClipEps
    eps_high: PosFloat
    dual_clip: Annotated[float, Field(gt=1)] | None
    kl_coef: NonNegFloat
    reference: Literal["prev", "base"]  # the KL reference policy
    reward_incorrect: float  # a correct sample earns 1; DAPO gives -1 to the rest
    overlong_cache: NonNegInt  # DAPO soft overlong penalty window in tokens; 0: off
    drop_uniform_groups: bool  # drop groups whose rewards are all equal (DAPO, NFT)
    semantic_entropy: SemanticEntropyConfig | None


class NftAlgorithm(Section):
    """NFT: negative-aware fine-tuning (specs/algorithms-a.md §4.2)."""

    kind: Literal["nft"]
    normalize: Literal[0, 1, 2]  # prompt weight: 1, 1 - r, sqrt((1 - r) / r)
    neg_weight: float
    clamp_positive: NonNegFloat
    clamp_negative: NonNegFloat
    ratio_cap: PosFloat  # log-ratio cap before exp
    normalizer: PosFloat  # the reference sums token losses and divides by 1000


class DpoAlgorithm(Section):
    """DPO on pairs built from verified rollouts (specs/algorithms-b.md §1.6)."""

    kind: Literal["dpo"]
    beta: PosFloat
    max_pairs_per_prompt: PosInt


Algorithm = Annotated[
    RaftAlgorithm | RaftPlusPlusAlgorithm | GrpoAlgorithm | NftAlgorithm | DpoAlgorithm,
    Field(discriminator="kind"),
]

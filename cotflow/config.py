"""The one typed config: params.yaml, validated on load.

Every default that changes results lives in params.yaml, never here: each field below is
required, so a key missing from params.yaml is an error rather than a silent default.
Unknown keys, wrong types and impossible values are errors that name the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from cotflow.algorithm_config import Algorithm
from cotflow.config_types import (
    ConfigError,
    NonNegFloat,
    NonNegInt,
    PosFloat,
    PosInt,
    Prob,
    Section,
)
from cotflow.critique_config import CritiqueConfig
from cotflow.data_config import DataConfig
from cotflow.scale_config import DeepSpeedConfig, ServingConfig, StoreConfig

ITERATION_KEY = re.compile(r"^\d{3}$")
class ModelConfig(Section):
    # "tiny" builds the from-scratch model; else a Hub id, a local checkpoint folder, or a GGUF
    # file (a .gguf path, or "smollm2": models/gguf.py) that the model stage converts
    name_or_path: str
    hidden_size: PosInt
    intermediate_size: PosInt
    num_layers: PosInt
    num_heads: PosInt
    max_position_embeddings: PosInt


Betas = Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)]


class WarmstartConfig(Section):
    steps: NonNegInt
    batch_size: PosInt
    lr: PosFloat
    warmup_steps: NonNegInt
    betas: Betas  # AdamW (beta1, beta2)
    weight_decay: NonNegFloat
    max_grad_norm: PosFloat
    checkpoint_every: NonNegInt  # optimizer steps between resume checkpoints; 0: none
    refinement_examples: NonNegInt  # Critique-GRPO's refinement format, taught (builtin)
    # TON: share of targets whose thought is replaced by the empty one (verify.format think)
    thought_dropout: Annotated[float, Field(ge=0, le=1)]


class GvmConfig(Section):
    """GVM budgets (specs/algorithms-a.md §1): probe, estimate p_i and G_i, allocate n_i."""

    probe: Literal["sample", "reuse"]  # reuse: the previous iteration's samples where it has some
    probe_n: PosInt  # N': probe samples per prompt
    budget: PosInt | None  # N: samples per iteration; None: n × prompts_per_iteration
    alpha: NonNegFloat
    beta: float
    filter_threshold: Annotated[float, Field(ge=0, le=1)]  # drop prompts with p_i above it
    filter_insufficient: NonNegFloat  # drop prompts expecting fewer accepted samples (0: off)
    floor: NonNegInt  # at least this many samples per prompt
    cap: PosInt | None  # at most this many (None: no cap)
    grad_params: list[str] = Field(min_length=1)  # parameter-name substrings for G_i
    grad_batch_size: PosInt


class AllocateConfig(Section):
    method: Literal["uniform", "gvm"]
    prompts_per_iteration: PosInt
    n: PosInt
    gvm: GvmConfig

    @property
    def budget(self) -> int:
        """Samples this iteration draws: the same for both methods unless gvm.budget says."""
        return self.gvm.budget or self.n * self.prompts_per_iteration

    @model_validator(mode="after")
    def _box_fits(self) -> AllocateConfig:
        g, k = self.gvm, self.prompts_per_iteration
        if g.cap is not None and g.cap < g.floor:
            raise ValueError(f"gvm.cap {g.cap} is below gvm.floor {g.floor}")
        if self.method == "gvm" and g.floor * k > self.budget:
            raise ValueError(f"gvm.floor {g.floor} × {k} prompts exceeds the budget "
                             f"{self.budget}")
        if self.method == "gvm" and g.cap is not None and g.cap * k < self.budget:
            raise ValueError(f"gvm.cap {g.cap} × {k} prompts is below the budget {self.budget}")
        return self


class SegmentsConfig(Section):
    """SPO-chain's Monte Carlo values (specs/algorithms-b.md §2.3), drawn by the sample
    stage when the iteration's algorithm kind is spo."""

    rollouts: PosInt  # N continuations from the state before each segment boundary
    interval: PosInt  # m: every m-th low-probability token starts a segment
    rho: Prob  # a token is low-probability (a cutpoint) when π_old(token) < rho


class TreeConfig(Section):
    """SPO-tree's sampled trees (specs/algorithms-b.md §2.4), drawn by the sample stage in
    place of independent samples when the iteration's algorithm kind is spo-tree."""

    branching: Annotated[list[PosInt], Field(min_length=1)]  # children per node, by depth
    segment_tokens: PosInt  # M: new tokens of an inner node; the last level runs to the end


class SampleConfig(Section):
    backend: Literal["hf", "openai", "vllm"]
    temperature: PosFloat
    top_p: Prob
    max_new_tokens: PosInt
    batch_size: PosInt
    # DAPO dynamic sampling: up to this many extra rounds on fresh prompts until as many
    # groups with mixed rewards as prompts were allocated; 0: off.
    dynamic_sampling_rounds: NonNegInt
    segments: SegmentsConfig
    tree: TreeConfig


class VerifyConfig(Section):
    timeout_s: PosFloat
    workers: NonNegInt
    memory_mb: Annotated[int, Field(ge=128)]
    check_steps: bool  # reward 0 for a right answer reached through a wrong arithmetic step
    # Where completions state their answer: cotflow/verify/extract.py FORMATS, in its order.
    format: Literal["boxed", "think", "gsm8k", "answer-tag", "last-number", "auto"]


class TrainConfig(Section):
    """The regime (models/steps.py): `epochs` passes over the iteration's rollout batch,
    one optimizer step per `mini_batch_size` examples (DPO: pairs), `micro_batch_size`
    per forward pass and rank (gradient accumulation inside the step)."""

    backend: Literal["torch", "deepspeed"]
    lr: PosFloat
    warmup_steps: NonNegInt
    epochs: PosInt
    mini_batch_size: PosInt
    micro_batch_size: PosInt
    max_grad_norm: PosFloat
    betas: Betas  # AdamW (beta1, beta2)
    weight_decay: NonNegFloat
    dedup: bool
    checkpoint_every: NonNegInt  # optimizer steps between resume checkpoints; 0: none


class EvaluateConfig(Section):
    max_new_tokens: PosInt
    batch_size: PosInt
    n_samples: PosInt
    pass_k: list[PosInt] = Field(min_length=1)
    temperature: PosFloat

    @model_validator(mode="after")
    def _k_fits(self) -> EvaluateConfig:
        if max(self.pass_k) > self.n_samples:
            raise ValueError(f"pass_k {max(self.pass_k)} exceeds n_samples {self.n_samples}")
        return self


class TrackingConfig(Section):
    enabled: bool
    uri: str | None  # None: sqlite store in the workspace (mlflow.db)
    experiment: str


class IterationConfig(Section):
    """One pipeline iteration: its algorithm (a key of `algorithms`), the folder it starts
    from, and section overrides."""

    algorithm: str
    prev: str
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)


class PipelineConfig(Section):
    seed: NonNegInt
    threads: PosInt
    data: DataConfig
    model: ModelConfig
    warmstart: WarmstartConfig
    allocate: AllocateConfig
    sample: SampleConfig
    verify: VerifyConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    critique: CritiqueConfig
    tracking: TrackingConfig
    serving: ServingConfig
    deepspeed: DeepSpeedConfig
    store: StoreConfig
    algorithms: dict[str, Algorithm] = Field(min_length=1)
    iterations: dict[str, IterationConfig] = Field(min_length=1)

    @field_validator("iterations", mode="before")
    @classmethod
    def _quoted(cls, its: Any) -> Any:
        if isinstance(its, dict):
            for key in its:
                if not isinstance(key, str):
                    raise ValueError(f"key {key!r}: quote iteration keys, e.g. \"001\" "
                                     "(YAML reads 001 as a number)")
        return its

    @field_validator("iterations")
    @classmethod
    def _chained(cls, its: dict[str, IterationConfig]) -> dict[str, IterationConfig]:
        # dvc.yaml cannot compute "the previous folder", so params.yaml states it; check it.
        for i, key in enumerate(its):
            if not ITERATION_KEY.match(key) or int(key) != i + 1:
                raise ValueError(f"key {key!r}: iterations must be '001', '002', ... in order")
            want = "base" if i == 0 else f"iter-{i:03d}"
            if its[key].prev != want:
                raise ValueError(f"{key}.prev is {its[key].prev!r}, expected {want!r}")
        return its

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        for key, it in self.iterations.items():
            if it.algorithm not in self.algorithms:
                raise ValueError(f"iterations.{key}.algorithm {it.algorithm!r} is not a key of "
                                 f"algorithms (have {', '.join(self.algorithms)})")
            kind = self.algorithms[it.algorithm].kind
            if kind == "ton" and self.verify.format != "think":
                raise ValueError(f"iterations.{key}: algorithm {it.algorithm!r} (kind ton) "
                                 "needs verify.format: think")
            if it.overrides.get("verify", {}).get("format", self.verify.format) != (
                    self.verify.format):
                raise ValueError(f"iterations.{key}.overrides.verify.format: the format is "
                                 "the warm start's; set it for the whole pipeline")
        if self.data.chat_template and self.model.name_or_path == "tiny":
            raise ValueError("data.chat_template: the tiny model's character tokenizer has no "
                             "chat template; set it to false (or choose an instruct model)")
        if self.data.system_prompt is not None and not self.data.chat_template:
            raise ValueError("data.system_prompt needs data.chat_template: true (a plain "
                             "prompt has no system turn: write it into data.prompt_template)")
        if self.warmstart.thought_dropout and self.verify.format != "think":
            raise ValueError("warmstart.thought_dropout needs verify.format: think (a thought "
                             "to drop)")
        per_iteration = self.allocate.prompts_per_iteration
        if self.data.source == "builtin" and per_iteration > self.data.n_train:
            raise ValueError(f"allocate.prompts_per_iteration ({per_iteration}) exceeds "
                             f"data.n_train ({self.data.n_train})")
        return self

    @model_validator(mode="after")
    def _server_named(self) -> PipelineConfig:
        if self.sample.backend == "openai" and not self.serving.url:
            raise ValueError("sample.backend openai needs serving.url (the server's base URL)")
        return self

    @model_validator(mode="after")
    def _ranks_fit(self) -> PipelineConfig:
        if self.train.backend == "deepspeed":
            if self.deepspeed.num_nodes > 1 and not (
                    self.deepspeed.launcher == "deepspeed" and self.deepspeed.hostfile):
                raise ValueError("deepspeed.num_nodes > 1 needs launcher deepspeed and a "
                                 "hostfile")
        return self

    def validate_overrides(self) -> None:
        """Apply every iteration's overrides now, so a bad one fails before any stage runs."""
        for key in self.iterations:
            self.for_iteration(key)

    def iteration_keys(self) -> list[str]:
        return list(self.iterations)

    def for_iteration(self, key: str) -> PipelineConfig:
        """This config with iteration `key`'s section overrides applied (validated again)."""
        if key not in self.iterations:
            have = list(self.iterations)
            raise ConfigError(f"iteration {key!r} is not in params.yaml (have {have})")
        overrides = self.iterations[key].overrides
        if not overrides:
            return self
        raw = self.model_dump()
        for section, values in overrides.items():
            if section not in raw or not isinstance(raw[section], dict) or section == "iterations":
                raise ConfigError(f"iterations.{key}.overrides.{section}: not a config section")
            raw[section] = _merged(raw[section], values)
        return _validate(raw, f"iterations.{key}.overrides")

    def algorithm(self, key: str) -> Algorithm:
        """The algorithm settings iteration `key` trains with."""
        return self.algorithms[self.iterations[key].algorithm]


def _merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` merged in, nested mappings key by key (so an override can change
    one setting of one algorithm)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _format_error(err: ValidationError, where: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "missing key"
        lines.append(f"{where}: {key}: {msg}")
    return "\n".join(lines)


def _validate(raw: Any, where: str) -> PipelineConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, where)) from None


def read_params(path: str | Path = "params.yaml") -> PipelineConfig:
    """Read and validate params.yaml once, without applying any iteration's overrides (a
    stage resolves only its own: `read_params(p).for_iteration(key)`); raise ConfigError
    naming the offending key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return _validate(raw, str(path))


def load_params(path: str | Path = "params.yaml") -> PipelineConfig:
    """`read_params`, then every iteration's overrides applied and validated once: for what
    must refuse bad input before anything runs (`cotflow run`, `preset`, `deploy`)."""
    cfg = read_params(path)
    cfg.validate_overrides()
    return cfg


def flatten(cfg: BaseModel) -> dict[str, str]:
    """Dotted key -> value of a config or one of its sections, for MLflow params."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(value)

    walk("", cfg.model_dump())
    return out

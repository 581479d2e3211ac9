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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Prob = Annotated[float, Field(gt=0, le=1)]

ITERATION_KEY = re.compile(r"^\d{3}$")


class ConfigError(ValueError):
    """params.yaml is malformed; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ColumnsConfig(_Section):
    question: str
    answer: str
    solution: str | None
    id: str | None
    difficulty: str | None


class DataConfig(_Section):
    source: str  # "builtin", a local .jsonl/.json/.parquet path, or a Hub dataset id
    n_train: PosInt
    n_test: PosInt
    difficulties: list[Annotated[int, Field(ge=1, le=3)]] = Field(min_length=1)
    columns: ColumnsConfig
    answer_format: Literal["auto", "gsm8k", "boxed", "plain"]
    train_split: str
    test_split: str
    prompt_template: str

    @field_validator("prompt_template")
    @classmethod
    def _has_question(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("must contain '{question}'")
        return v


class ModelConfig(_Section):
    name_or_path: str  # "tiny" builds the from-scratch model; else a Hub id or local path
    hidden_size: PosInt
    intermediate_size: PosInt
    num_layers: PosInt
    num_heads: PosInt
    max_position_embeddings: PosInt


class WarmstartConfig(_Section):
    steps: NonNegInt
    batch_size: PosInt
    lr: PosFloat
    warmup_steps: NonNegInt
    weight_decay: NonNegFloat
    max_grad_norm: PosFloat


class AllocateConfig(_Section):
    method: Literal["uniform"]
    prompts_per_iteration: PosInt
    n: PosInt


class SampleConfig(_Section):
    backend: Literal["hf", "openai", "vllm"]
    temperature: PosFloat
    top_p: Prob
    max_new_tokens: PosInt
    batch_size: PosInt


class VerifyConfig(_Section):
    timeout_s: PosFloat
    workers: NonNegInt
    memory_mb: Annotated[int, Field(ge=128)]
    check_steps: bool  # reward 0 for a right answer reached through a wrong arithmetic step


class TrainConfig(_Section):
    backend: Literal["torch", "deepspeed"]
    lr: PosFloat
    warmup_steps: NonNegInt
    epochs: PosInt
    micro_batch_size: PosInt
    grad_accum_steps: PosInt
    max_grad_norm: PosFloat
    weight_decay: NonNegFloat
    clip_eps: Annotated[float, Field(gt=0, lt=1)]
    dedup: bool


class EvaluateConfig(_Section):
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


class TrackingConfig(_Section):
    enabled: bool
    uri: str | None  # None: sqlite store in the workspace (mlflow.db)
    experiment: str


LAUNCH_FIELDS = ("python", "model", "host", "port", "tensor_parallel_size",
                 "data_parallel_size", "gpu_memory_utilization", "seed")


class LaunchConfig(_Section):
    """The server that `sample.backend: vllm` starts on each stage's policy checkpoint."""

    command: str  # argv template; {model} {host} {port} {seed} {python} and the fields below
    tensor_parallel_size: PosInt
    data_parallel_size: PosInt
    gpu_memory_utilization: Prob
    startup_timeout_s: PosFloat

    @field_validator("command")
    @classmethod
    def _known_fields(cls, v: str) -> str:
        import shlex
        import string

        try:
            words = shlex.split(v)
        except ValueError as err:
            raise ValueError(f"cannot split {v!r}: {err}") from None
        if not words:
            raise ValueError("is empty")
        for word in words:
            for _, field, _, _ in string.Formatter().parse(word):
                if field is not None and field not in LAUNCH_FIELDS:
                    raise ValueError(f"unknown placeholder {{{field}}} "
                                     f"(have {', '.join(LAUNCH_FIELDS)})")
        return v


class ServingConfig(_Section):
    """Where the openai and vllm backends sample. Operational (which server, how hard to push
    it), so no DVC stage tracks it, like `tracking`."""

    url: str | None  # openai: base URL of a running server, e.g. http://gpu-1:8000/v1
    model: str | None  # openai: model name to request; None: the stage's policy path
    extra_body: dict[str, Any]  # merged into every request (server-specific fields)
    concurrency: PosInt
    timeout_s: PosFloat
    max_retries: NonNegInt
    launch: LaunchConfig


class DeepSpeedConfig(_Section):
    """`train.backend: deepspeed`. train.micro_batch_size stays the global micro-batch,
    split evenly over the ranks, so the other train knobs mean what they mean for torch."""

    zero_stage: Annotated[int, Field(ge=0, le=3)]
    offload_optimizer: bool  # optimizer state and step on CPU (DeepSpeedCPUAdam)
    bf16: bool  # bf16 weights and activations (GPUs); false: fp32
    launcher: Literal["torchrun", "deepspeed"]
    num_gpus: PosInt  # ranks per node (on CPU: processes talking gloo)
    num_nodes: PosInt
    hostfile: str | None  # deepspeed launcher, several nodes: "host slots=N" per line
    master_addr: str
    master_port: Annotated[int, Field(ge=1024, le=65535)]


class StoreConfig(_Section):
    """Shared artifact store. Operational: no stage tracks it."""

    dvc_remote: str | None  # a DVC remote URL (s3://, gs://, ssh://, a folder); pushed to by
    #                         `cotflow run` after each iteration. None: artifacts stay local.


class IterationConfig(_Section):
    """One pipeline iteration: its algorithm, the folder it starts from, section overrides."""

    algorithm: Literal["raft", "raft++"]
    prev: str
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)


class PipelineConfig(_Section):
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
    tracking: TrackingConfig
    serving: ServingConfig
    deepspeed: DeepSpeedConfig
    store: StoreConfig
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
            ranks = self.deepspeed.num_gpus * self.deepspeed.num_nodes
            if self.train.micro_batch_size % ranks:
                raise ValueError(f"train.micro_batch_size ({self.train.micro_batch_size}) must "
                                 f"split evenly over deepspeed's {ranks} ranks")
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
            raw[section] = {**raw[section], **values}
        return _validate(raw, f"iterations.{key}.overrides")


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


def load_params(path: str | Path = "params.yaml") -> PipelineConfig:
    """Read and validate params.yaml; raise ConfigError naming the offending key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    cfg = _validate(raw, str(path))
    cfg.validate_overrides()
    return cfg


def flatten(cfg: PipelineConfig) -> dict[str, str]:
    """Dotted key -> value, for logging params once to MLflow."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = str(value)

    walk("", cfg.model_dump())
    return out

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
    checkpoint_every: NonNegInt  # optimizer steps between resume checkpoints; 0: none


class GvmConfig(_Section):
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


class AllocateConfig(_Section):
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


class SampleConfig(_Section):
    backend: Literal["hf", "openai", "vllm"]
    temperature: PosFloat
    top_p: Prob
    max_new_tokens: PosInt
    batch_size: PosInt
    # DAPO dynamic sampling: up to this many extra rounds on fresh prompts until as many
    # groups with mixed rewards as prompts were allocated; 0: off.
    dynamic_sampling_rounds: NonNegInt


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
    dedup: bool
    checkpoint_every: NonNegInt  # optimizer steps between resume checkpoints; 0: none


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


ClipEps = Annotated[float, Field(gt=0, lt=1)]


class RaftAlgorithm(_Section):
    """RAFT: SFT on accepted samples (specs/algorithms-b.md §5.2)."""

    kind: Literal["raft"]


class RaftPlusPlusAlgorithm(_Section):
    """RAFT++: the clipped surrogate with A = 1[correct] against the stage-start policy."""

    kind: Literal["raft++"]
    clip_eps: ClipEps


class SemanticEntropyConfig(_Section):
    """SEED-GRPO's advantage scaling (specs/algorithms-a.md §2.2)."""

    alpha: NonNegFloat
    estimator: Literal["rao", "mc"]
    weighting: Literal["frequency", "seq_prob", "mean_token_prob"]
    f: Literal["reciprocal", "linear"]


class GrpoAlgorithm(_Section):
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


class NftAlgorithm(_Section):
    """NFT: negative-aware fine-tuning (specs/algorithms-a.md §4.2)."""

    kind: Literal["nft"]
    normalize: Literal[0, 1, 2]  # prompt weight: 1, 1 - r, sqrt((1 - r) / r)
    neg_weight: float
    clamp_positive: NonNegFloat
    clamp_negative: NonNegFloat
    ratio_cap: PosFloat  # log-ratio cap before exp
    normalizer: PosFloat  # the reference sums token losses and divides by 1000


class DpoAlgorithm(_Section):
    """DPO on pairs built from verified rollouts (specs/algorithms-b.md §1.6)."""

    kind: Literal["dpo"]
    beta: PosFloat
    max_pairs_per_prompt: PosInt


Algorithm = Annotated[
    RaftAlgorithm | RaftPlusPlusAlgorithm | GrpoAlgorithm | NftAlgorithm | DpoAlgorithm,
    Field(discriminator="kind"),
]


class IterationConfig(_Section):
    """One pipeline iteration: its algorithm (a key of `algorithms`), the folder it starts
    from, and section overrides."""

    algorithm: str
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
            dpo = [k for k, a in self.algorithms.items() if a.kind == "dpo"
                   and any(it.algorithm == k for it in self.iterations.values())]
            if dpo:
                raise ValueError(f"train.backend deepspeed trains policy-gradient iterations; "
                                 f"{', '.join(dpo)} (dpo) needs train.backend torch")
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

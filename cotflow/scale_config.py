"""params.yaml `serving`, `deepspeed` and `store`: where sampling, training and artifacts
run at scale (DESIGN.md, Scale)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from cotflow.config_types import NonNegInt, PosFloat, PosInt, Prob, Section

LAUNCH_FIELDS = ("python", "model", "host", "port", "tensor_parallel_size",
                 "data_parallel_size", "gpu_memory_utilization", "seed")


class LaunchConfig(Section):
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


class ServingConfig(Section):
    """Where the openai and vllm backends sample. Operational (which server, how hard to push
    it), so no DVC stage tracks it, like `tracking`."""

    url: str | None  # openai: base URL of a running server, e.g. http://gpu-1:8000/v1
    model: str | None  # openai: model name to request; None: the stage's policy path
    extra_body: dict[str, Any]  # merged into every request (server-specific fields)
    concurrency: PosInt
    timeout_s: PosFloat
    max_retries: NonNegInt
    launch: LaunchConfig


class DeepSpeedConfig(Section):
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


class StoreConfig(Section):
    """Shared artifact store. Operational: no stage tracks it."""

    dvc_remote: str | None  # a DVC remote URL (s3://, gs://, ssh://, a folder); pushed to by
    #                         `cotflow run` after each iteration. None: artifacts stay local.

"""params.yaml `critique`: how the critique stage words critiques, whom it asks for a
step-by-step critique on data other than the built-in task, and the refinement prompt
(Critique-GRPO, specs/algorithms-a.md §3.2-3.3). Which critique type an iteration uses is
its algorithm entry's `critique`."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import field_validator

from cotflow.config_types import NonNegInt, PosFloat, PosInt, Prob, Section


def _fields(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as err:
        raise ValueError(f"cannot read {template!r}: {err}") from None


def _exact_fields(template: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> str:
    fields = _fields(template)
    unknown = sorted(fields - set(allowed))
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} (have {', '.join(allowed)})")
    missing = [f for f in required if f not in fields]
    if missing:
        raise ValueError(f"must contain {{{missing[0]}}}")
    return template


class CriticConfig(Section):
    """An LM critic for `cot` critiques where the task has no programmatic one: reached
    through the sampling backends, with its own model, prompt and sampling settings."""

    backend: Literal["hf", "openai", "vllm"]
    model: str | None  # hf, vllm: a local path or Hub id; openai: the model name to request
    url: str | None  # openai: the critic server's base URL; None: serving.url
    template: str  # {question} {previous} {reference}; asks for the closing marker
    temperature: PosFloat
    top_p: Prob
    max_new_tokens: PosInt
    retries: NonNegInt  # fresh tries of a malformed critique before the indicative_gt one

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        return _exact_fields(v, ("question", "previous", "reference"), ("question", "previous"))


class CritiqueConfig(Section):
    wording: Literal["terse", "paper"]  # of the indicative critiques (cotflow/critiques.py)
    refinement_template: str  # {question} {previous} {critique}
    self_template: str  # type self: the policy's critic prompt, {question} {previous}
    critic: CriticConfig

    @field_validator("refinement_template")
    @classmethod
    def _refinement(cls, v: str) -> str:
        fields = ("question", "previous", "critique")
        return _exact_fields(v, fields, fields)

    @field_validator("self_template")
    @classmethod
    def _self(cls, v: str) -> str:
        return _exact_fields(v, ("question", "previous"), ("question", "previous"))

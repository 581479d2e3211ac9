"""The sampling interface and its backends, chosen once by `sample.backend`.

A backend turns a flat list of prompts into one completion each; callers repeat a prompt
n times for n samples, so per-prompt budgets (GVM) need nothing special here.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int  # generated tokens, <eos> included when it was produced
    finished: bool  # True if the model stopped by itself before max_new_tokens


class Sampler(Protocol):
    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float,
        top_p: float, seed: int, greedy: bool = False,
    ) -> list[Completion]: ...

    @property
    def tokens_per_s(self) -> float: ...


# Dotted paths, imported on demand so a backend's heavy dependencies load only when chosen.
BACKENDS = {"hf": "models.hf_sampler:HFSampler"}


def make_sampler(backend: str, policy: Path, *, batch_size: int, threads: int) -> Sampler:
    if backend not in BACKENDS:
        raise ValueError(f"sample.backend {backend!r}: unknown (have {sorted(BACKENDS)})")
    module, _, name = BACKENDS[backend].partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(policy, batch_size=batch_size, threads=threads)

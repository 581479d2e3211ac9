"""The sampling interface and its backends, chosen once by `sample.backend`.

A backend turns a flat list of prompts into one completion each; callers repeat a prompt
n times for n samples, so per-prompt budgets (GVM) need nothing special here. A prompt is
text, or token ids (a prompt plus a partial completion: continuations, SPO's MC values).

    hf      in-process transformers `generate` (the CPU default)
    openai  any OpenAI-compatible completions server at `serving.url`
    vllm    a server started by `serving.launch.command` on the stage's policy, stopped after
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Completion:
    """One sampled completion, with the ids the policy saw and produced, so training can
    score exactly these tokens rather than a re-tokenisation of the text."""

    text: str  # the completion decoded for people (and the verifier), special tokens dropped
    token_ids: list[int]  # as sampled; ends in <eos> if and only if `finished`
    prompt_ids: list[int]  # the prompt as the model read it: no padding, <bos> if added
    finished: bool  # True if the model stopped by itself before max_new_tokens

    @property
    def num_tokens(self) -> int:
        """Generated tokens, <eos> included when it was produced."""
        return len(self.token_ids)


class Sampler(Protocol):
    def generate(
        self, prompts: Sequence[str] | Sequence[Sequence[int]], *, max_new_tokens: int,
        temperature: float, top_p: float, seed: int, greedy: bool = False,
    ) -> list[Completion]: ...

    @property
    def tokens_per_s(self) -> float: ...


# Dotted paths, imported on demand so a backend's heavy dependencies load only when chosen.
BACKENDS = {
    "hf": "models.hf_sampler:HFSampler",
    "openai": "models.openai_sampler:OpenAISampler",
    "vllm": "models.vllm_sampler:VLLMSampler",
}
# What each backend takes beyond (policy, batch_size, threads).
_NEEDS = {"openai": ("serving",), "vllm": ("serving", "seed")}


@contextmanager
def make_sampler(backend: str, policy: Path, *, batch_size: int, threads: int,
                 serving: Any = None, seed: int = 0) -> Iterator[Sampler]:
    """`with make_sampler(...) as sampler:` -- whatever the backend holds (a server, a
    connection pool) is released when the block ends, also on failure."""
    if backend not in BACKENDS:
        raise ValueError(f"sample.backend {backend!r}: unknown (have {sorted(BACKENDS)})")
    module, _, name = BACKENDS[backend].partition(":")
    cls = getattr(importlib.import_module(module), name)
    given = {"serving": serving, "seed": seed}
    extra = {k: given[k] for k in _NEEDS.get(backend, ())}
    if "serving" in extra and serving is None:
        raise ValueError(f"sample.backend {backend!r} needs the serving section of params.yaml")
    sampler = cls(policy, batch_size=batch_size, threads=threads, **extra)
    try:
        yield sampler
    finally:
        close = getattr(sampler, "close", None)
        if close is not None:
            close()


def check_available(backend: str, serving: Any) -> None:
    """Refuse, before a stage writes anything, a backend this machine cannot run."""
    import importlib.util
    import shutil

    if backend in ("openai", "vllm") and importlib.util.find_spec("httpx") is None:
        raise ValueError(f"sample.backend {backend} needs the extra: pip install -e '.[vllm]'")
    if backend == "vllm":
        from models.server import launch_values, render_command

        argv = render_command(serving.launch.command, launch_values(
            serving.launch, model=Path("policy"), host="127.0.0.1", port=0, seed=0))
        if shutil.which(argv[0]) is None:
            raise ValueError(f"sample.backend vllm: serving.launch.command runs {argv[0]!r}, "
                             "which is not on PATH (install vLLM in an environment of its own "
                             "and give the full path of its `vllm` in the command)")

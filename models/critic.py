"""The model-facing parts of the critique stage: LM critics (an external one for `cot`
critiques, the policy itself for `self`) and the check that a prompt fits the policy's
context. Critic output is untrusted text: it is only searched for the closing marker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotflow.critiques import parse_critic


def critique_rounds(sampler: Any, prompts: Sequence[str] | Sequence[Sequence[int]], *,
                    retries: int,
                    max_new_tokens: int, temperature: float, top_p: float,
                    seed: int) -> tuple[list[str | None], int]:
    """Each prompt's critique, or None when `1 + retries` draws all lacked the marker; and
    the number of completions drawn."""
    out: list[str | None] = [None] * len(prompts)
    todo = list(range(len(prompts)))
    draws = 0
    for attempt in range(1 + retries):
        if not todo:
            break
        draws += len(todo)
        drawn = sampler.generate([prompts[i] for i in todo], max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_p=top_p, seed=seed + attempt)
        for i, c in zip(todo, drawn, strict=True):
            out[i] = parse_critic(c.text)
        todo = [i for i in todo if out[i] is None]
    return out, draws


def lm_critiques(cfg: Any, prompts: Sequence[str], *, seed: int) -> list[str | None]:
    """`cot` critiques from the LM critic of `cfg.critique.critic`, opened for this call
    and closed after it (a vllm critic's server must not outlive it: the policy's starts next)."""
    from models.sampler import make_sampler

    c = cfg.critique.critic
    if not prompts:
        return []
    if c.backend in ("hf", "vllm") and not c.model:
        raise ValueError(f"critique.critic.model: the {c.backend} critic needs a local path or "
                         "Hub id (critique type cot on data other than builtin)")
    serving = cfg.serving
    if c.backend == "openai":
        url = c.url or serving.url
        if not url:
            raise ValueError("critique.critic.url (or serving.url): the openai critic needs a "
                             "server's base URL (critique type cot on data other than builtin)")
        serving = serving.model_copy(update={"url": url, "model": c.model})
    with make_sampler(c.backend, Path(c.model or "critic"), batch_size=cfg.sample.batch_size,
                      threads=cfg.threads, serving=serving, seed=seed) as sampler:
        return critique_rounds(sampler, prompts, retries=c.retries,
                               max_new_tokens=c.max_new_tokens, temperature=c.temperature,
                               top_p=c.top_p, seed=seed)[0]


def check_prompt_room(policy: Path, prompts: Sequence[str] | Sequence[Sequence[int]],
                      names: Sequence[str], *, new_tokens: int, what: str) -> list[int]:
    """Each prompt's length in the policy's tokens (a prompt is what the sampler is given:
    text, or ids); a prompt that leaves fewer than `new_tokens` positions of the policy's
    context is refused, naming it. `names` says which record each prompt belongs to."""
    from transformers import AutoConfig, AutoTokenizer

    context = int(AutoConfig.from_pretrained(str(policy)).max_position_embeddings)
    if prompts and isinstance(prompts[0], str):
        prompts = AutoTokenizer.from_pretrained(str(policy))(list(prompts))["input_ids"]
    lengths = [len(ids) for ids in prompts]
    for name, n in zip(names, lengths, strict=True):
        if n + new_tokens > context:
            raise ValueError(
                f"{what} of {name} is {n} tokens: with {new_tokens} new tokens it exceeds "
                f"the policy's context of {context}; shorten critique.refinement_template "
                "or critique.self_template, or use wording terse")
    return lengths

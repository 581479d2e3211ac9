"""An LM as VerIPO's consistency judge (specs/algorithms-b.md §4.4): its own model and
prompt, sampled greedily through the configured sampling backend, each reply parsed by its
first keyword ("unknown" when it has none). Model text fills the template's fields as
values only; it is never evaluated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def judge_consistency(cfg: Any, model: str, template: str, max_new_tokens: int,
                      items: Sequence[tuple[str, str, str | None]]) -> list[bool | None]:
    """items: (question, completion, extracted answer) -> consistent True/False/None."""
    from cotflow.algorithms.veripo import parse_consistency, split_reasoning
    from models.sampler import make_sampler

    prompts = []
    for question, completion, answer in items:
        _, reasoning, tail = split_reasoning(completion)
        prompts.append(template.format(question=question, reasoning=reasoning,
                                       answer=answer if answer is not None else tail))
    if not prompts:
        return []
    with make_sampler(cfg.sample.backend, model, batch_size=cfg.sample.batch_size,
                      threads=cfg.threads, serving=cfg.serving, seed=cfg.seed) as sampler:
        replies = sampler.generate(prompts, max_new_tokens=max_new_tokens, temperature=1.0,
                                   top_p=1.0, seed=cfg.seed, greedy=True)
    return [parse_consistency(r.text) for r in replies]

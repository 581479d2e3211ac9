"""Drawing samples: prompts from problems, n completions each, as `samples.parquet` rows.

Shared by the sample stage and GVM's probe in allocate, so both draw exactly alike; and
whether prompts fit the model's context (the data stage, `cotflow eval`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cotflow.config import PipelineConfig


def check_context(cfg: PipelineConfig, tokenizer: Any, context: int,
                  splits: dict[str, list[dict]]) -> None:
    """Refuse a prompt that leaves the model no room for its answer, naming the row."""
    from cotflow.data.errors import DataError
    from models.prompts import PromptFormat

    prompts = PromptFormat(cfg.data, tokenizer)
    new_tokens = max(cfg.sample.max_new_tokens, cfg.evaluate.max_new_tokens)
    room = context - new_tokens
    for name, rows in splits.items():
        if not rows:
            continue
        ids = prompts.encode([prompts.text(r["question"]) for r in rows])
        for i, (row, prompt) in enumerate(zip(rows, ids, strict=True)):
            if len(prompt) > room:
                raise DataError(
                    f"{cfg.data.source}: {name} split, row {i} (id {row['id']!r}), field "
                    f"'question': the prompt is {len(prompt)} tokens, but the model's context "
                    f"of {context} leaves {room} beside {new_tokens} new tokens "
                    "(sample/evaluate.max_new_tokens)")


def draw(cfg: PipelineConfig, problems: dict[str, dict[str, Any]], policy: Path,
         counts: Iterable[tuple[str, int]], *, seed: int, where: Path,
         sampler: Any = None) -> tuple[list[dict[str, Any]], float]:
    """`n` sample rows per (prompt_id, n) with the `sample` settings; and tokens/s.

    `where` names the file the counts came from, for the error on an unknown prompt;
    `sampler` reuses a loaded sampler of `policy` (else one is made)."""
    from models.prompts import policy_prompts
    from models.sampler import make_sampler

    s = cfg.sample
    prompts = policy_prompts(cfg.data, policy)
    rows: list[dict[str, Any]] = []
    for pid, n in counts:
        if pid not in problems:
            raise ValueError(f"{where}: prompt_id {pid!r} is not among the training problems")
        prompt = prompts.text(problems[pid]["question"])
        rows.extend({"prompt_id": pid, "sample_idx": j, "prompt": prompt} for j in range(n))
    if not rows:
        return rows, 0.0
    inputs = prompts.for_sampler([r["prompt"] for r in rows])
    if sampler is None:
        with make_sampler(s.backend, policy, batch_size=s.batch_size, threads=cfg.threads,
                          serving=cfg.serving, seed=seed) as own:
            return _complete(cfg, rows, inputs, own, seed)
    return _complete(cfg, rows, inputs, sampler, seed)


def _complete(cfg: PipelineConfig, rows: list[dict[str, Any]], inputs: list, sampler: Any,
              seed: int) -> tuple[list[dict[str, Any]], float]:
    s = cfg.sample
    completions = sampler.generate(inputs, max_new_tokens=s.max_new_tokens,
                                   temperature=s.temperature, top_p=s.top_p, seed=seed)
    for row, c in zip(rows, completions, strict=True):
        row.update(completion=c.text, num_tokens=c.num_tokens, finished=c.finished,
                   prompt_ids=c.prompt_ids, completion_ids=c.token_ids)
    return rows, sampler.tokens_per_s

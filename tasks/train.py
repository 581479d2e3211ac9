"""train: update the previous iteration's policy on this iteration's verified samples.

raft: SFT on accepted (correct) completions. raft++: the clipped surrogate with A = 1 on
accepted completions, against the policy as it was when the stage started.
Incorrect completions have A = 0 in both; they would only add tokens to the token-mean's
denominator (specs/algorithms-b.md §5.6), so they are left out: the step is that of SFT on
accepted tokens, as in classic RAFT. Output: policy/ (save_pretrained).
"""

from __future__ import annotations

import logging
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table

log = logging.getLogger(__name__)


def accepted_examples(samples: dict[str, list], verdicts: dict[str, list], *, dedup: bool):
    """Correct completions as training examples, in sample order, optionally deduplicated."""
    from models.torch_trainer import Example

    keys = list(zip(samples["prompt_id"], samples["sample_idx"], strict=True))
    if keys != list(zip(verdicts["prompt_id"], verdicts["sample_idx"], strict=True)):
        raise ValueError("verdicts do not line up with samples (rerun verify)")
    seen: set[tuple[str, str]] = set()
    out = []
    for prompt, completion, reward in zip(samples["prompt"], samples["completion"],
                                          verdicts["reward"], strict=True):
        if reward <= 0 or (dedup and (prompt, completion) in seen):
            continue
        seen.add((prompt, completion))
        out.append(Example(prompt, completion, 1.0))
    return out


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from models.policy import context_length, load_policy, save_policy
    from models.torch_trainer import rl_epochs
    from tasks.common import iteration_seed

    t = cfg.train
    torch.set_num_threads(cfg.threads)
    examples = accepted_examples(read_table(it.samples, "samples"),
                                 read_table(it.verdicts, "verdicts"), dedup=t.dedup)
    model, tokenizer = load_policy(it.prev_policy, for_training=True)
    algorithm = cfg.iterations[it.key].algorithm
    result: dict[str, Any] = {}
    trainer, backend_args = rl_epochs, {}
    if t.backend == "deepspeed":  # same arguments, run on many ranks (models/deepspeed_trainer)
        from models.deepspeed_trainer import rl_epochs_deepspeed

        trainer, backend_args = rl_epochs_deepspeed, {
            "ds": cfg.deepspeed, "threads": cfg.threads,
            "job_dir": layout.root / ".cache" / "deepspeed" / f"train-{it.key}"}
    if examples:
        result = trainer(model, tokenizer, examples, algorithm=algorithm, epochs=t.epochs,
                           micro_batch_size=t.micro_batch_size,
                           grad_accum_steps=t.grad_accum_steps, lr=t.lr,
                           warmup_steps=t.warmup_steps,
                           weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
                           clip_eps=t.clip_eps, seed=iteration_seed(cfg, it.key),
                           max_len=context_length(model, cfg), **backend_args)
    else:
        log.warning("no accepted samples: the policy is saved unchanged")
    save_policy(model, tokenizer, it.policy)
    stats = {"algorithm": algorithm, "examples": len(examples),
             **{k: round(v, 6) for k, v in result.items()
                if k in ("loss", "grad_norm", "clip_fraction", "optimizer_steps")}}
    return stats, {"train/tokens_per_s": round(result.get("tokens_per_s", 0.0), 1)}

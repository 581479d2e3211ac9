"""warmstart: the starting policy (tiny: built here), SFT on the train split's worked
solutions in the verifier's format (verify.format), with TON's thought dropout there
(cotflow/data/targets.py) and Critique-GRPO's refinement examples where asked.

Input: artifacts/base/train.parquet and the model stage's artifacts/base/model/ (what a
GGUF source was converted into). Output: artifacts/base/policy/. Resumes from its last
checkpoint (`_checkpointer`) when killed mid-way.
"""

from __future__ import annotations

import logging
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import Layout
from cotflow.records import read_table, rows_of

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, layout: Layout) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from cotflow.data.targets import sft_targets
    from models.policy import (
        build_tiny_policy,
        context_length,
        load_policy,
        save_policy,
    )
    from models.source import source_model
    from models.torch_trainer import sft_steps

    torch.set_num_threads(cfg.threads)
    src = source_model(cfg, layout)  # a GGUF source: the model stage's checkpoint
    train = rows_of(read_table(layout.train_set, "problems"))
    if src == "tiny":
        model, tokenizer = build_tiny_policy(cfg.model, cfg.seed)
    else:
        model, tokenizer = load_policy(src, for_training=True)
    context = context_length(model, cfg)
    w = cfg.warmstart
    targets = sft_targets(train, cfg.verify.format, dropout=w.thought_dropout, seed=cfg.seed)
    examples = question_examples(cfg, tokenizer, [(p["question"], t) for p, t, _ in targets])
    taught = refinement_examples(cfg, tokenizer, train, context)
    examples += taught
    sft: dict[str, Any] = {}
    if w.steps and examples:
        log.info("warm start: %d SFT steps on %d worked solutions", w.steps, len(examples))
        sft = sft_steps(model, tokenizer.pad_token_id, examples, steps=w.steps,
                        batch_size=w.batch_size, lr=w.lr, warmup_steps=w.warmup_steps,
                        betas=w.betas, weight_decay=w.weight_decay,
                        max_grad_norm=w.max_grad_norm, seed=cfg.seed, max_len=context,
                        checkpoint=_checkpointer(cfg, layout))
    save_policy(model, tokenizer, layout.base_policy)
    stats = {"steps": w.steps if examples else 0,
             "refinement_examples": len(taught),
             "final_loss": round(sft["loss"], 6) if sft else None,
             "thought_dropped_fraction": round(
                 sum(d for *_, d in targets) / max(len(targets), 1), 6)}
    # The SFT loop's own seconds: run_stage's `seconds` also count building and saving.
    timing = {"warmstart/tokens_per_s": round(sft.get("tokens_per_s", 0.0), 1),
              "warmstart/sft_seconds": round(sft.get("seconds", 0.0), 2)}
    return stats, timing


def question_examples(cfg: PipelineConfig, tokenizer: Any,
                      pairs: list[tuple[str, str]]) -> list:
    """SFT examples of (question, target): the prompt ids are those the samplers condition
    on (models/prompts.py), so the warm start trains the prompts it will be sampled from."""
    from models.prompts import PromptFormat
    from models.torch_trainer import text_example

    prompts = PromptFormat(cfg.data, tokenizer)
    return [text_example(tokenizer, prompts.ids(q), target) for q, target in pairs]


def refinement_examples(cfg: PipelineConfig, tokenizer: Any, train: list[dict],
                        context: int) -> list:
    """`warmstart.refinement_examples` examples that teach the policy to read a critique
    (Critique-GRPO's refinement prompt -> the right solution) and to write one (`self`),
    built from the built-in task's steps (cotflow/data/arithmetic_critic.py)."""
    from cotflow.data.arithmetic_critic import teaching_pairs
    from models.prompts import PromptFormat
    from models.torch_trainer import text_example

    count = cfg.warmstart.refinement_examples
    if not count:
        return []
    if cfg.data.source != "builtin":
        raise ValueError("warmstart.refinement_examples: the examples are built from the "
                         "built-in task's steps; set it to 0 for data.source "
                         f"{cfg.data.source!r}")
    c = cfg.critique
    pairs = teaching_pairs(train, count, seed=cfg.seed, refinement_template=c.refinement_template,
                           self_template=c.self_template, wording=c.wording)
    # User messages, as the critique stage gives them to the policy (models/prompts.py).
    fmt = PromptFormat(cfg.data, tokenizer)
    ids = fmt.encode([fmt.render(prompt) for prompt, _ in pairs])
    out = [text_example(tokenizer, p, target) for p, (_, target) in zip(ids, pairs, strict=True)]
    longest = max(out, key=lambda ex: len(ex.prompt_ids) + len(ex.completion_ids))
    if len(longest.prompt_ids) + len(longest.completion_ids) > context:
        raise ValueError(f"warmstart.refinement_examples: an example is "
                         f"{len(longest.prompt_ids) + len(longest.completion_ids)} tokens, over "
                         f"the model's context of {context}; shorten critique.refinement_template")
    return out


def _checkpointer(cfg: PipelineConfig, layout: Layout):
    """Resume point of the warm start, keyed to everything its result reads."""
    import models.prompts
    import models.torch_trainer
    from cotflow.algorithms import losses
    from cotflow.data import targets
    from models.checkpoint import Checkpointer, fingerprint

    config = {k: getattr(cfg, k).model_dump() for k in ("data", "model", "warmstart", "critique")}
    config.update(seed=cfg.seed, threads=cfg.threads, format=cfg.verify.format)
    files = [layout.train_set, __file__, models.torch_trainer.__file__, losses.__file__,
             targets.__file__, models.prompts.__file__]
    return Checkpointer.for_stage(layout.base, "warmstart", cfg.warmstart.checkpoint_every,
                                  fingerprint(config, files))

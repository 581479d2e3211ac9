"""prepare: data splits, the starting policy (tiny: built and warm-started here), its metrics.

The warm start is SFT on the worked solutions in the verifier's format (verify.format), with
TON's thought dropout there (cotflow/data/targets.py).

Outputs: artifacts/base/{train,test}.parquet, policy/, metrics.json, evaluation.parquet.
"""

from __future__ import annotations

import logging
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import Layout
from cotflow.records import write_json, write_table

log = logging.getLogger(__name__)


def load_splits(cfg: PipelineConfig) -> tuple[list[dict], list[dict]]:
    """Train and held-out problems from the built-in task or a `datasets` source."""
    from cotflow.data.sources import ColumnMap, is_local_file, load_rows, validate_rows

    d = cfg.data
    # Character tokenizer: a question longer than this cannot fit beside its answer.
    limit = None
    if cfg.model.name_or_path == "tiny":
        limit = cfg.model.max_position_embeddings - cfg.sample.max_new_tokens - len(
            d.prompt_template.format(question="")) - 1
    if d.source == "builtin":
        from cotflow.data.arithmetic import make_splits

        train, test = make_splits(d.n_train, d.n_test, cfg.seed, d.difficulties)
        validate_rows(train + test, "builtin", max_question_chars=limit)
    else:
        cols = ColumnMap(**d.columns.model_dump())
        if is_local_file(d.source):
            # One file holds both: the first n_test rows are held out, the next n_train train.
            rows = load_rows(d.source, columns=cols, answer_format=d.answer_format,
                             limit=d.n_test + d.n_train, max_question_chars=limit)
            test, train = rows[:d.n_test], rows[d.n_test:]
        else:
            train = load_rows(d.source, split=d.train_split, columns=cols,
                              answer_format=d.answer_format, limit=d.n_train,
                              max_question_chars=limit)
            test = load_rows(d.source, split=d.test_split, columns=cols,
                             answer_format=d.answer_format, limit=d.n_test,
                             max_question_chars=limit)
    for name, rows in (("train", train), ("held-out", test)):
        if not rows:
            raise ValueError(f"data.source {d.source!r}: the {name} split is empty")
    overlap = {p["question"] for p in train} & {p["question"] for p in test}
    if overlap:
        raise ValueError(f"{d.source}: {len(overlap)} held-out questions also appear in the "
                         f"train split, e.g. {sorted(overlap)[0]!r}")
    return train, test


def check_context(cfg: PipelineConfig, tokenizer: Any, context: int,
                  splits: dict[str, list[dict]]) -> None:
    """Refuse a prompt that leaves the model no room for its answer, naming the row."""
    from cotflow.data.errors import DataError
    from models.drawing import format_prompt

    new_tokens = max(cfg.sample.max_new_tokens, cfg.evaluate.max_new_tokens)
    room = context - new_tokens
    for name, rows in splits.items():
        if not rows:
            continue
        ids = tokenizer([format_prompt(cfg, r["question"]) for r in rows])["input_ids"]
        for i, (row, prompt) in enumerate(zip(rows, ids, strict=True)):
            if len(prompt) > room:
                raise DataError(
                    f"{cfg.data.source}: {name} split, row {i} (id {row['id']!r}), field "
                    f"'question': the prompt is {len(prompt)} tokens, but the model's context "
                    f"of {context} leaves {room} beside {new_tokens} new tokens "
                    "(sample/evaluate.max_new_tokens)")


def run(cfg: PipelineConfig, layout: Layout) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from cotflow.data.targets import sft_targets
    from models.drawing import format_prompt
    from models.evaluation import evaluate_policy
    from models.policy import (
        build_tiny_policy,
        check_model_source,
        context_length,
        load_policy,
        save_policy,
    )
    from models.torch_trainer import sft_steps, text_example

    torch.set_num_threads(cfg.threads)
    train, test = load_splits(cfg)
    # Load or build the model before writing anything, so a bad model path writes nothing.
    if cfg.model.name_or_path == "tiny":
        model, tokenizer = build_tiny_policy(cfg.model, cfg.seed)
    else:
        check_model_source(cfg.model.name_or_path)  # a typed path: its own message
        model, tokenizer = load_policy(cfg.model.name_or_path, for_training=True)
    check_context(cfg, tokenizer, context_length(model, cfg), {"held-out": test, "train": train})
    write_table(layout.train_set, "problems", train)
    write_table(layout.test_set, "problems", test)
    for kind, path in layout.base_rollout_files.items():
        write_table(path, kind, [])

    w = cfg.warmstart
    targets = sft_targets(train, cfg.verify.format, dropout=w.thought_dropout, seed=cfg.seed)
    examples = [text_example(tokenizer, format_prompt(cfg, p["question"]), target)
                for p, target, _ in targets]
    taught = refinement_examples(cfg, tokenizer, train, context_length(model, cfg))
    examples += taught
    sft: dict[str, Any] = {}
    ckpt = _checkpointer(cfg, layout)
    if w.steps and examples:
        log.info("warm start: %d SFT steps on %d worked solutions", w.steps, len(examples))
        sft = sft_steps(model, tokenizer.pad_token_id, examples, steps=w.steps,
                        batch_size=w.batch_size, lr=w.lr, warmup_steps=w.warmup_steps,
                        betas=w.betas, weight_decay=w.weight_decay,
                        max_grad_norm=w.max_grad_norm, seed=cfg.seed,
                        max_len=context_length(model, cfg), checkpoint=ckpt)
    save_policy(model, tokenizer, layout.base_policy)
    del model
    metrics, eval_timing, per_problem = evaluate_policy(cfg, layout.base_policy, test)
    write_table(layout.base_evaluation, "evaluation", per_problem)
    write_json(layout.base_metrics, {"iteration": 0, **metrics})
    write_json(layout.base_curve, [{"iteration": 0, "accuracy": metrics["accuracy"]}])
    stats = {"train_problems": len(train), "test_problems": len(test),
             "warmstart/steps": w.steps if examples else 0,
             "warmstart/refinement_examples": len(taught),
             "warmstart/final_loss": round(sft["loss"], 6) if sft else None,
             "warmstart/thought_dropped_fraction": round(
                 sum(d for *_, d in targets) / max(len(targets), 1), 6)}
    timing = {"warmstart/tokens_per_s": round(sft.get("tokens_per_s", 0.0), 1),
              "warmstart/seconds": round(sft.get("seconds", 0.0), 2),
              **eval_timing}
    return stats, timing


def refinement_examples(cfg: PipelineConfig, tokenizer: Any, train: list[dict],
                        context: int) -> list:
    """`warmstart.refinement_examples` examples that teach the policy to read a critique
    (Critique-GRPO's refinement prompt -> the right solution) and to write one (`self`),
    built from the built-in task's steps (cotflow/data/arithmetic_critic.py)."""
    from cotflow.data.arithmetic_critic import teaching_pairs
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
    out = [text_example(tokenizer, prompt, target) for prompt, target in pairs]
    longest = max(out, key=lambda ex: len(ex.prompt_ids) + len(ex.completion_ids))
    if len(longest.prompt_ids) + len(longest.completion_ids) > context:
        raise ValueError(f"warmstart.refinement_examples: an example is "
                         f"{len(longest.prompt_ids) + len(longest.completion_ids)} tokens, over "
                         f"the model's context of {context}; shorten critique.refinement_template")
    return out


def _checkpointer(cfg: PipelineConfig, layout: Layout):
    """Resume point of the warm start, keyed to everything its result reads."""
    import models.torch_trainer
    from cotflow.algorithms import losses
    from cotflow.data import targets
    from models.checkpoint import Checkpointer, fingerprint

    config = {k: getattr(cfg, k).model_dump() for k in ("data", "model", "warmstart", "critique")}
    config.update(seed=cfg.seed, threads=cfg.threads, format=cfg.verify.format)
    files = [layout.train_set, __file__, models.torch_trainer.__file__, losses.__file__,
             targets.__file__]
    return Checkpointer.for_stage(layout.base, "warmstart", cfg.warmstart.checkpoint_every,
                                  fingerprint(config, files))

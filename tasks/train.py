"""train: update the previous iteration's policy on this iteration's verified rollouts.

The iteration's algorithm names a params.yaml `algorithms` entry; its `kind` names the
recipe (cotflow/recipes) that turns the rollouts into a training plan: examples and the
objective. This stage only runs it: it loads the policy, computes the stage-start and
reference log-probs the plan asks for, and trains with the `train` section's regime
(models/steps.py: epochs, mini-batch per optimizer step, micro-batches) on the chosen
backend. Output: policy/ (save_pretrained); stats/train.json reports optimizer_steps.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.recipes import recipe_for
from cotflow.recipes.base import Example, Inputs, rollout_example
from cotflow.records import read_table, write_json
from cotflow.rollouts import Rollout, rollouts, selected_refinements

log = logging.getLogger(__name__)
REPORTED = ("loss", "grad_norm", "clip_fraction", "kl", "entropy", "optimizer_steps",
            "reward_accuracy", "margin", "chosen_logp", "rejected_logp", "chosen_logratio",
            "rejected_logratio", "nll", "mean_ratio", "skipped")


class StageServices:
    """What recipes may ask of the stage: the verifier's equivalence (answers are model
    output: graded in the worker pool) and the stage-start policy's log-probs."""

    def __init__(self, cfg: PipelineConfig, model, pad_id: int, max_len: int) -> None:
        self.cfg, self.model, self.pad_id, self.max_len = cfg, model, pad_id, max_len
        # The stage-start policy's log-probs per sequence: a recipe that asks for them
        # (SEED-GRPO) and the trainer's old log-probs share one forward pass.
        self._cache: dict[tuple[tuple[int, ...], tuple[int, ...]], Any] = {}

    def start_logprobs(self, examples: Sequence[Example]) -> list:
        """log π_start of every next token of each example (the trainer's `old`)."""
        from models.torch_trainer import stage_start_logprobs

        keys = [(ex.prompt_ids, ex.completion_ids) for ex in examples]
        missing = {k: ex for k, ex in zip(keys, examples, strict=True) if k not in self._cache}
        if missing:
            computed = stage_start_logprobs(
                self.model, self.pad_id, list(missing.values()),
                micro_batch_size=self.cfg.train.micro_batch_size, max_len=self.max_len)
            self._cache.update(zip(missing, computed, strict=True))
        return [self._cache[k] for k in keys]

    def equivalent(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bool]:
        from cotflow.verify.grade import CORRECT
        from cotflow.verify.pool import VerifierPool

        v = self.cfg.verify
        with VerifierPool(workers=v.workers, timeout_s=v.timeout_s,
                          memory_mb=v.memory_mb) as pool:
            grades = pool.grade_many([(a, "\\boxed{" + b + "}") for a, b in pairs])
        return {p: g.verdict == CORRECT for p, g in zip(pairs, grades, strict=True)}

    def completion_logprobs(self, rows: Sequence[Rollout]):
        token_lps = self.start_logprobs([rollout_example(r) for r in rows])
        return [lp[len(r.prompt_ids) - 1:] for lp, r in zip(token_lps, rows, strict=True)]


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from models.policy import context_length, load_policy, save_policy
    from models.torch_trainer import stage_start_logprobs
    from tasks.common import iteration_seed

    t = cfg.train
    torch.set_num_threads(cfg.threads)
    algo = cfg.algorithm(it.key)
    rows = rollouts(read_table(it.samples, "samples"), read_table(it.verdicts, "verdicts"))
    if getattr(algo, "critique", None):
        # Critique-GRPO's selected refinements join their prompts' groups.
        rows += selected_refinements(read_table(it.critiques, "critiques"), rows)
    model, tokenizer = load_policy(it.prev_policy, for_training=True)
    max_len = context_length(model, cfg)
    pad_id = tokenizer.pad_token_id
    recipe = recipe_for(algo.kind)
    # Only a recipe that judges reads the judge stage's pairs.
    judgements = (read_table(it.judgements, "judgements")
                  if recipe.judge or recipe.verifier else {})
    side = {"values": it.values, "tree": it.tree}
    tables = {name: read_table(side[name], name) for name in recipe.reads}
    services = StageServices(cfg, model, pad_id, max_len)
    plan = recipe.plan(algo, Inputs(
        rollouts=rows, judgements=judgements,
        max_new_tokens=cfg.sample.max_new_tokens, dedup=t.dedup, services=services,
        tables=tables, segments=cfg.sample.segments))
    stats = {"algorithm": cfg.iterations[it.key].algorithm, "kind": algo.kind, **plan.stats,
             "examples": len(plan.examples)}
    result: dict[str, Any] = {}
    if plan.examples:
        old = (services.start_logprobs(plan.examples)
               if plan.old or plan.reference == "prev" else None)
        ref = None
        if plan.reference == "base":
            ref = stage_start_logprobs(load_policy(layout.base_policy)[0], pad_id,
                                       plan.examples, micro_batch_size=t.micro_batch_size,
                                       max_len=max_len)
        elif plan.reference == "prev":
            ref = old
        train = _trainer(cfg, layout)
        result = train(model, pad_id, plan.examples, plan.objective, units=plan.units,
                       old=old, ref=ref, epochs=t.epochs, mini_batch_size=t.mini_batch_size,
                       micro_batch_size=t.micro_batch_size, lr=t.lr,
                       warmup_steps=t.warmup_steps, betas=t.betas,
                       weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
                       seed=iteration_seed(cfg, it.key), max_len=max_len,
                       checkpoint=_checkpointer(cfg, layout, it))
    else:
        log.warning("nothing to train on: the policy is saved unchanged")
        result = {"optimizer_steps": 0}
    save_policy(model, tokenizer, it.policy)
    # Per step, what a DPO that falls shows first: chosen and rejected log-probs, margin.
    history = result.get("history") or [
        {"step": i + 1, "loss": x} for i, x in enumerate(result.get("loss_curve", []))]
    write_json(it.train_steps, [{k: round(v, 6) for k, v in h.items()} for h in history])
    stats.update({k: round(v, 6) for k, v in result.items() if k in REPORTED})
    return stats, {"train/tokens_per_s": round(result.get("tokens_per_s", 0.0), 1)}


def _trainer(cfg: PipelineConfig, layout: Layout):
    if cfg.train.backend == "deepspeed":  # same arguments, run on many ranks
        from models.deepspeed_trainer import on_deepspeed

        return on_deepspeed(cfg, layout)
    from models.torch_trainer import train_policy

    return train_policy


def _checkpointer(cfg: PipelineConfig, layout: Layout, it: IterationLayout):
    """Resume point of this stage's optimizer loop, keyed to everything its result reads."""
    from pathlib import Path

    import models.torch_trainer
    from models.checkpoint import Checkpointer, fingerprint

    config = {"train": cfg.train.model_dump(), "seed": cfg.seed, "threads": cfg.threads,
              "segments": cfg.sample.segments.model_dump(),
              "tree": cfg.sample.tree.model_dump(),
              "context": cfg.model.max_position_embeddings, "key": it.key,
              "iteration": cfg.iterations[it.key].model_dump(),
              "algorithm": cfg.algorithm(it.key).model_dump()}
    root = Path(__file__).parents[1]
    code = [__file__, models.torch_trainer.__file__, root / "models" / "steps.py",
            root / "cotflow" / "rollouts.py", root / "cotflow" / "recipes",
            root / "cotflow" / "algorithms"]
    inputs = [it.samples, it.values, it.tree, it.verdicts, it.critiques, it.judgements,
              it.prev_policy, layout.base_policy]
    return Checkpointer.for_stage(it.dir, "train", cfg.train.checkpoint_every,
                                  fingerprint(config, [p for p in inputs if Path(p).exists()]
                                              + code))

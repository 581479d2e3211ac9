"""train: update the previous iteration's policy on this iteration's verified samples.

What trains, by the iteration's algorithm kind (params.yaml `algorithms`):
- raft: SFT on accepted (correct) completions. raft++: the clipped surrogate with A = 1 on
  them, against the stage-start policy. Incorrect completions have A = 0 in both; they would
  only add tokens to the token-mean's denominator (specs/algorithms-b.md §5.6), so they are
  left out: the step is that of SFT on accepted tokens, as in classic RAFT.
- grpo (GRPO, Dr.GRPO, DAPO, SEED-GRPO): group advantages over each prompt's samples, the
  clipped surrogate against the stage-start policy, optional k3 KL to a reference.
- nft: the NFT loss on the samples of prompts with some but not all samples correct.
- dpo: the judge stage's (chosen, rejected) pairs; the reference is the stage-start policy.
Output: policy/ (save_pretrained).
"""

from __future__ import annotations

import logging
from typing import Any

from cotflow.algorithm_config import (
    DpoAlgorithm,
    GrpoAlgorithm,
    NftAlgorithm,
    RaftPlusPlusAlgorithm,
)
from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table
from tasks import rollouts as ro

log = logging.getLogger(__name__)
REPORTED = ("loss", "grad_norm", "clip_fraction", "kl", "entropy", "optimizer_steps",
            "reward_accuracy", "margin")


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    from models.policy import context_length, load_policy, save_policy
    from tasks.common import iteration_seed

    t = cfg.train
    torch.set_num_threads(cfg.threads)
    algo = cfg.algorithm(it.key)
    samples = read_table(it.samples, "samples")
    rows = ro.rollouts(samples, read_table(it.verdicts, "verdicts"))
    model, tokenizer = load_policy(it.prev_policy, for_training=True)
    opts = dict(epochs=t.epochs, micro_batch_size=t.micro_batch_size,
                grad_accum_steps=t.grad_accum_steps, lr=t.lr, warmup_steps=t.warmup_steps,
                weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
                seed=iteration_seed(cfg, it.key), max_len=context_length(model, cfg),
                checkpoint=_checkpointer(cfg, layout, it))
    if isinstance(algo, DpoAlgorithm):
        result, stats = _dpo(model, tokenizer, algo, it, rows, samples["sample_idx"], opts)
    else:
        result, stats = _policy_gradient(cfg, layout, model, tokenizer, algo, rows, opts)
    if not result:
        log.warning("nothing to train on: the policy is saved unchanged")
    save_policy(model, tokenizer, it.policy)
    stats = {"algorithm": cfg.iterations[it.key].algorithm, "kind": algo.kind, **stats,
             **{k: round(v, 6) for k, v in result.items() if k in REPORTED}}
    return stats, {"train/tokens_per_s": round(result.get("tokens_per_s", 0.0), 1)}


def _policy_gradient(cfg: PipelineConfig, layout: Layout, model, tokenizer, algo,
                     rows: list[ro.Rollout], opts: dict[str, Any]):
    from cotflow.algorithms import objectives
    from models.torch_trainer import Example, policy_epochs, stage_start_logprobs

    stats: dict[str, Any] = {}
    needs_old = not (algo.kind == "raft")
    if algo.kind in ("raft", "raft++"):
        weighted = [ro.Weighted(r, 1.0) for r in ro.accepted(rows, dedup=cfg.train.dedup)]
        stats = {"zero_variance_share": ro.zero_variance_share_of(rows)}
    elif isinstance(algo, NftAlgorithm):
        weighted, stats = ro.nft_examples(rows)
    else:
        weighted, stats = _grpo_examples(cfg, model, tokenizer, algo, rows, opts)
    examples = [Example(w.rollout.prompt, w.rollout.completion, w.advantage, w.correct, w.r_hat)
                for w in weighted]
    stats["examples"] = len(examples)
    if not examples:
        return {}, stats
    old = (stage_start_logprobs(model, tokenizer, examples,
                                micro_batch_size=opts["micro_batch_size"],
                                max_len=opts["max_len"]) if needs_old else None)
    ref = None
    if isinstance(algo, GrpoAlgorithm) and algo.kl_coef:
        ref = old if algo.reference == "prev" else _reference_logprobs(layout, examples, opts)
    if isinstance(algo, RaftPlusPlusAlgorithm):
        objective = objectives.raft_plus_plus(algo.clip_eps)
    elif isinstance(algo, GrpoAlgorithm):
        objective = objectives.grpo(
            eps_low=algo.eps_low, eps_high=algo.eps_high, dual_clip=algo.dual_clip,
            loss_agg=algo.loss_agg, kl_coef=algo.kl_coef,
            loss_constant=algo.loss_constant or float(cfg.sample.max_new_tokens))
    elif isinstance(algo, NftAlgorithm):
        objective = objectives.nft(
            normalize=algo.normalize, neg_weight=algo.neg_weight,
            clamp_positive=algo.clamp_positive, clamp_negative=algo.clamp_negative,
            ratio_cap=algo.ratio_cap, normalizer=algo.normalizer)
    else:
        objective = objectives.raft
    train = policy_epochs
    if cfg.train.backend == "deepspeed":  # same arguments, run on many ranks
        from models.deepspeed_trainer import on_deepspeed

        train = on_deepspeed(cfg, layout)
    return train(model, tokenizer, examples, objective, old=old, ref=ref, **opts), stats


def _grpo_examples(cfg: PipelineConfig, model, tokenizer, algo: GrpoAlgorithm,
                   rows: list[ro.Rollout], opts: dict[str, Any]):
    rewards = ro.shaped_rewards(rows, reward_incorrect=algo.reward_incorrect,
                                overlong_cache=algo.overlong_cache,
                                max_new_tokens=cfg.sample.max_new_tokens)
    scales, se_stats = None, {}
    if algo.semantic_entropy is not None:
        scales, se_stats = _seed_scales(cfg, model, tokenizer, algo, rows, opts)
    weighted, stats = ro.group_advantage_examples(
        rows, rewards, std=algo.advantage_std, eps=algo.std_eps,
        drop_uniform=algo.drop_uniform_groups, scales=scales)
    return weighted, {**stats, **se_stats}


def _seed_scales(cfg: PipelineConfig, model, tokenizer, algo: GrpoAlgorithm,
                 rows: list[ro.Rollout], opts: dict[str, Any]):
    """SEED-GRPO's per-prompt scales; answers are clustered by the verifier's equivalence,
    in its worker pool (the answers are model output)."""
    from cotflow.verify.grade import CORRECT
    from cotflow.verify.pool import VerifierPool
    from models.torch_trainer import Example, stage_start_logprobs

    se = algo.semantic_entropy
    assert se is not None
    pairs = ro.answer_pairs(rows)
    v = cfg.verify
    with VerifierPool(workers=v.workers, timeout_s=v.timeout_s, memory_mb=v.memory_mb) as pool:
        grades = pool.grade_many([(a, "\\boxed{" + b + "}") for a, b in pairs])
    equivalent = ro.equivalence_from({p: g.verdict == CORRECT
                                      for p, g in zip(pairs, grades, strict=True)})
    logliks = None
    if se.weighting != "frequency":
        token_lps = stage_start_logprobs(
            model, tokenizer, [Example(r.prompt, r.completion) for r in rows],
            micro_batch_size=opts["micro_batch_size"], max_len=opts["max_len"])
        # Response tokens only: the prompt's log-probs are the same for the whole group.
        prompt_lens = [len(tokenizer(r.prompt)["input_ids"]) - 1 for r in rows]
        sums = [float(lp[n:].sum()) for lp, n in zip(token_lps, prompt_lens, strict=True)]
        counts = [max(len(lp) - n, 1) for lp, n in zip(token_lps, prompt_lens, strict=True)]
        logliks = (sums if se.weighting == "seq_prob"
                   else [s / c for s, c in zip(sums, counts, strict=True)])
    return ro.semantic_entropy_scales(rows, equivalent, alpha=se.alpha, estimator=se.estimator,
                                      weighting=se.weighting, f=se.f, logliks=logliks)


def _reference_logprobs(layout: Layout, examples, opts: dict[str, Any]):
    from models.policy import load_policy
    from models.torch_trainer import stage_start_logprobs

    ref_model, ref_tokenizer = load_policy(layout.base_policy)
    return stage_start_logprobs(ref_model, ref_tokenizer, examples,
                                micro_batch_size=opts["micro_batch_size"],
                                max_len=opts["max_len"])


def _dpo(model, tokenizer, algo: DpoAlgorithm, it: IterationLayout, rows: list[ro.Rollout],
         sample_idx: list[int], opts: dict[str, Any]):
    from models.torch_trainer import Example, dpo_epochs

    pairs = ro.pairs_of(read_table(it.judgements, "judgements"), rows, sample_idx)
    stats = {"pairs": len(pairs)}
    if not pairs:
        return {}, stats
    examples = [(Example(c.prompt, c.completion), Example(r.prompt, r.completion))
                for c, r in pairs]
    return dpo_epochs(model, tokenizer, examples, beta=algo.beta, **opts), stats


def _checkpointer(cfg: PipelineConfig, layout: Layout, it: IterationLayout):
    """Resume point of this stage's optimizer loop, keyed to everything its result reads."""
    from pathlib import Path

    import models.torch_trainer
    from models.checkpoint import Checkpointer, fingerprint

    config = {"train": cfg.train.model_dump(), "seed": cfg.seed, "threads": cfg.threads,
              "context": cfg.model.max_position_embeddings, "key": it.key,
              "iteration": cfg.iterations[it.key].model_dump(),
              "algorithm": cfg.algorithm(it.key).model_dump()}
    code = [__file__, ro.__file__, models.torch_trainer.__file__,
            Path(__file__).parents[1] / "cotflow" / "algorithms"]
    inputs = [it.samples, it.verdicts, it.judgements, it.prev_policy, layout.base_policy]
    return Checkpointer.for_stage(it.dir, "train", cfg.train.checkpoint_every,
                                  fingerprint(config, [p for p in inputs if Path(p).exists()]
                                              + code))

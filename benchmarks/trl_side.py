"""TRL's side of benchmarks/trl_grpo.py: GRPOConfig set up to do per generation batch what
one cotflow grpo iteration does (the mapping is in trl_grpo.py's docstring), the timed run
of GRPOTrainer with a held-out evaluation after each batch, and what both sides record."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl_sweep import Knobs

GROUP_SIZE = 8  # cotflow.presets.GROUP_SIZE; checked against it in trl_grpo.main()


@dataclass
class Run:
    """Held-out accuracy after each iteration, with cumulative seconds to that point."""
    name: str
    points: list[tuple[float, float, float]] = field(default_factory=list)  # train s, total s, acc
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cpu: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # train, evaluate

    def curve(self, with_eval: bool) -> list[tuple[float, float]]:
        return [(total if with_eval else train, acc) for train, total, acc in self.points]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the verifier's workers): a
    figure that contention from other jobs on the machine does not inflate."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def matched_knobs(cfg) -> Knobs:
    """The TRL knobs that do what cotflow's grpo iteration does (trl_kwargs checks the rest):
    verl's seq-mean-token-mean is TRL's "grpo" loss, the sample std its "group" scaling."""
    key = next(iter(cfg.iterations))
    train = cfg.for_iteration(key).train
    return Knobs(learning_rate=train.lr, loss_type="grpo", num_iterations=train.epochs,
                 scale_rewards="group", beta=cfg.algorithm(key).kl_coef)


def trl_kwargs(cfg, iterations: int, out: Path, knobs: Knobs) -> dict[str, Any]:
    """GRPOConfig's arguments doing per generation batch what one cotflow grpo iteration
    does, but for `knobs` (matched_knobs(cfg): all of it)."""
    key = next(iter(cfg.iterations))
    algo = cfg.algorithm(key)
    unsupported = {"advantage_std": (algo.advantage_std, "sample"),
                   "loss_agg": (algo.loss_agg, "seq-mean-token-mean"),
                   "reference": (algo.reference, "prev"), "dual_clip": (algo.dual_clip, None),
                   "reward_incorrect": (algo.reward_incorrect, 0.0),
                   "overlong_cache": (algo.overlong_cache, 0),
                   "drop_uniform_groups": (algo.drop_uniform_groups, False),
                   "semantic_entropy": (algo.semantic_entropy, None)}
    for name, (have, need) in unsupported.items():
        if have != need:
            raise SystemExit(f"algorithms.grpo.{name} = {have!r}: this benchmark maps only "
                             f"{need!r} onto TRL's GRPOTrainer")
    if cfg.sample.dynamic_sampling_rounds:
        raise SystemExit("sample.dynamic_sampling_rounds: TRL has no dynamic sampling")
    # The iteration's sections: the preset sets train's steps and rate there, over params'.
    it = cfg.for_iteration(key)
    t, s = it.train, it.sample
    budget = it.allocate.prompts_per_iteration * GROUP_SIZE
    # cotflow runs a mini-batch smaller than train.micro_batch_size as one micro-batch
    # (models/steps.py), as small --prompts make it.
    micro = min(t.micro_batch_size, t.mini_batch_size)
    if budget % micro:
        raise SystemExit(f"--prompts × {GROUP_SIZE} = {budget} must be a multiple of "
                         f"train.micro_batch_size = {micro}: TRL splits a generation batch "
                         "into equal micro-batches")
    if t.mini_batch_size % micro or budget % t.mini_batch_size:
        raise SystemExit(f"train.mini_batch_size {t.mini_batch_size} must be a multiple of "
                         f"train.micro_batch_size {micro} and divide the budget {budget}: "
                         "TRL's steps are equal-sized")
    accum = t.mini_batch_size // micro
    steps = knobs.num_iterations * budget // t.mini_batch_size  # optimizer steps per iteration
    return dict(
        output_dir=str(out), use_cpu=True, bf16=False, fp16=False, report_to="none",
        save_strategy="no", logging_steps=steps, disable_tqdm=True, seed=cfg.seed,
        dataloader_num_workers=0, remove_unused_columns=False,
        model_init_kwargs={"dtype": "float32"},
        # GRPOConfig turns it on by default, to save memory: a tiny model needs none, and
        # recomputing every forward in the backward would only slow TRL down.
        gradient_checkpointing=False,
        # sampling: sample.* of params.yaml
        num_generations=GROUP_SIZE, generation_batch_size=budget,
        max_completion_length=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
        top_k=0,
        # training: train.* and algorithms.grpo, but for the knobs
        per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
        num_iterations=knobs.num_iterations, max_steps=iterations * steps,
        learning_rate=knobs.learning_rate, lr_scheduler_type="constant_with_warmup",
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        optim="adamw_torch", adam_beta1=t.betas[0], adam_beta2=t.betas[1],
        loss_type=knobs.loss_type, scale_rewards=knobs.scale_rewards, beta=knobs.beta,
        epsilon=algo.eps_low, epsilon_high=algo.eps_high, mask_truncated_completions=False,
        sync_ref_model=bool(knobs.beta), ref_model_mixup_alpha=1.0, ref_model_sync_steps=steps,
    )


def run_trl(root: Path, cfg, iterations: int, warm_acc: float, knobs: Knobs) -> Run:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from cotflow.layout import Layout
    from cotflow.records import read_table, rows_of
    from cotflow.verify.scoring import grade_rewards
    from models.evaluation import evaluate_policy
    from models.policy import load_policy, save_policy
    from models.prompts import policy_prompts

    torch.set_num_threads(cfg.threads)
    layout = Layout(root)
    run = Run("TRL", [(0.0, 0.0, warm_acc)])
    train_rows = rows_of(read_table(layout.train_set, "problems"))
    test = rows_of(read_table(layout.test_set, "problems"))
    # TRL tokenizes the text itself: the plain template's rule (models/prompts.py).
    fmt = policy_prompts(cfg.data, layout.base_policy)
    dataset = Dataset.from_dict({"prompt": [fmt.text(r["question"]) for r in train_rows],
                                 "answer": [r["answer"] for r in train_rows]})

    def reward(prompts, completions, answer, **_: Any) -> list[float]:
        t0 = time.perf_counter()
        rewards = grade_rewards(cfg.verify, answer, completions)[1]
        run.seconds["reward (verify)"] += time.perf_counter() - t0
        return rewards

    class Timed(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            t0, r0 = time.perf_counter(), run.seconds["reward (verify)"]
            out = super()._generate_and_score_completions(inputs)
            # Sampling plus the old and reference log-probs; the reward is counted apart.
            run.seconds["generate + log-probs"] += (time.perf_counter() - t0
                                                    - (run.seconds["reward (verify)"] - r0))
            return out

    args = GRPOConfig(**trl_kwargs(cfg, iterations, root / "trl-output", knobs))
    every = args.ref_model_sync_steps
    _, tokenizer = load_policy(layout.base_policy)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    evaluating = 0.0

    class HeldOut(TrainerCallback):
        """evaluate_policy after each generation batch; its time is kept out of training's."""

        def on_step_end(self, args, state, control, model=None, **_: Any):
            nonlocal evaluating
            if state.global_step % every:
                return
            t0, c0 = time.perf_counter(), cpu_seconds()
            rng = torch.get_rng_state()  # the sampler reseeds torch; TRL's sampling must not see it
            policy = save_policy(model, tokenizer, root / "trl-policies" / f"{state.global_step}")
            acc = evaluate_policy(cfg, policy, test)[0]["accuracy"]
            torch.set_rng_state(rng)
            model.train()
            t1 = time.perf_counter()
            run.points.append((t0 - start - evaluating, t1 - start, acc))
            evaluating += t1 - t0
            run.cpu["evaluate"] += cpu_seconds() - c0
            print(f"TRL after {state.global_step // every} generation batches: accuracy "
                  f"{100 * acc:.1f}%, train {run.points[-1][0]:.0f} s", flush=True)

    trainer = Timed(model=str(layout.base_policy), reward_funcs=reward, args=args,
                    train_dataset=dataset, processing_class=tokenizer, callbacks=[HeldOut()])
    run.seconds["setup"] = time.perf_counter() - start
    trainer.train()
    total = time.perf_counter() - start
    run.cpu["train"] = cpu_seconds() - cpu_start - run.cpu["evaluate"]
    run.seconds["evaluate"] = evaluating
    run.seconds["optimizer steps + rest"] = total - sum(run.seconds.values())
    return run

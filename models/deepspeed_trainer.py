"""`train.backend: deepspeed`: the policy-gradient iterations under DeepSpeed ZeRO 0-3.

The train stage calls `policy_epochs_deepspeed` with what it would give the torch trainer's
`policy_epochs` (examples, objective, stage-start and reference log-probs). It writes them
and the policy to a job folder (the objective with cloudpickle), starts the ranks through
torchrun or the deepspeed launcher (hostfile for several nodes; gloo on CPU, nccl on GPUs),
and loads the trained weights back, so the stage saves a plain `save_pretrained`
checkpoint either way. Each rank runs `python -m models.deepspeed_trainer JOB`.

Same batches as the torch trainer: one seeded shuffle per epoch cut into global
micro-batches of `micro_batch_size`, each split evenly over the ranks; DeepSpeed averages
the ranks' gradients, accumulates `grad_accum_steps` of them and clips. A last accumulation
that is short is dropped (DeepSpeed steps only on full ones), unlike the torch trainer,
which rescales it; the stats count what was dropped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
PROJECT = Path(__file__).resolve().parents[1]


def launch_argv(ds: Any, job: Path) -> list[str]:
    """The launcher command that runs every rank of `job`."""
    ranks = ds.num_gpus
    if ds.launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
                f"--nnodes={ds.num_nodes}", f"--master_addr={ds.master_addr}",
                f"--master_port={ds.master_port}", "-m", "models.deepspeed_trainer", str(job)]
    argv = [sys.executable, "-m", "deepspeed.launcher.runner", f"--num_gpus={ranks}",
            f"--num_nodes={ds.num_nodes}", f"--master_addr={ds.master_addr}",
            f"--master_port={ds.master_port}"]
    if ds.hostfile:
        argv.append(f"--hostfile={ds.hostfile}")
    return [*argv, "--module", "models.deepspeed_trainer", str(job)]


def on_deepspeed(cfg: Any, layout: Any):
    """`policy_epochs` with this config's DeepSpeed settings filled in."""
    from functools import partial

    return partial(policy_epochs_deepspeed, ds=cfg.deepspeed, threads=cfg.threads,
                   job_dir=layout.root / ".cache" / "deepspeed-job")


def policy_epochs_deepspeed(model, tokenizer, examples: Sequence[Any], objective: Any, *,
                            old: Sequence[Any] | None, ref: Sequence[Any] | None, ds: Any,
                            threads: int, job_dir: Path, checkpoint: Any = None,
                            **kwargs: Any) -> dict[str, float]:
    """Train `model` in place on all ranks; `kwargs` are `policy_epochs`' own. Returns its
    statistics, plus the per-step loss curve and what was dropped. `checkpoint` (resume
    inside a stage) is the torch trainer's: here a failed stage reruns from its start."""
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise ImportError("train.backend deepspeed needs the extra: "
                          "DS_BUILD_OPS=0 pip install -e '.[deepspeed]'") from None
    import shutil

    if checkpoint is not None and getattr(checkpoint, "every", 0):
        log.info("train.checkpoint_every is not used by the deepspeed backend")
    import cloudpickle
    import torch
    from transformers import AutoModelForCausalLM

    shutil.rmtree(job_dir, ignore_errors=True)
    job_dir.mkdir(parents=True)
    model.save_pretrained(job_dir / "in")
    tokenizer.save_pretrained(job_dir / "in")
    job = {"examples": [asdict(ex) for ex in examples], "kwargs": kwargs, "threads": threads,
           "ds": ds.model_dump()}
    (job_dir / "job.json").write_text(json.dumps(job))
    (job_dir / "objective.pkl").write_bytes(cloudpickle.dumps(objective))
    torch.save({"old": None if old is None else list(old),
                "ref": None if ref is None else list(ref)}, job_dir / "logprobs.pt")
    argv = launch_argv(ds, job_dir)
    log.info("launching %d rank(s): %s", ds.num_gpus * ds.num_nodes, shlex.join(argv))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PROJECT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    with open(job_dir / "launch.log", "wb") as out:
        proc = subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait()
        except BaseException:
            os.killpg(proc.pid, 9)
            raise
    if code != 0:
        tail = "\n".join((job_dir / "launch.log").read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"deepspeed training failed (exit {code}); last lines of "
                           f"{job_dir / 'launch.log'}:\n{tail}")
    trained = AutoModelForCausalLM.from_pretrained(job_dir / "out", dtype=model.dtype)
    model.load_state_dict(trained.state_dict())
    stats = json.loads((job_dir / "result.json").read_text())
    stats["launch_seconds"] = time.perf_counter() - t0
    shutil.rmtree(job_dir, ignore_errors=True)
    return stats


def ds_config(ds: dict[str, Any], *, per_rank: int, grad_accum_steps: int, max_grad_norm: float,
              lr: float, weight_decay: float) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": ds["zero_stage"]}
    cfg: dict[str, Any] = {"train_micro_batch_size_per_gpu": per_rank,
                           "gradient_accumulation_steps": grad_accum_steps,
                           "gradient_clipping": max_grad_norm, "zero_optimization": zero,
                           "bf16": {"enabled": ds["bf16"]}, "steps_per_print": 10**9,
                           "wall_clock_breakdown": False}
    if ds["offload_optimizer"]:
        zero["offload_optimizer"] = {"device": "cpu"}
        # DeepSpeed builds DeepSpeedCPUAdam from this; same AdamW as the torch trainer.
        cfg["optimizer"] = {"type": "AdamW", "params": {
            "lr": lr, "betas": [0.9, 0.98], "weight_decay": weight_decay}}
    return cfg


def _rank_main(job_dir: Path) -> None:
    import cloudpickle
    import deepspeed
    import torch
    import torch.distributed as dist

    from cotflow.algorithms.losses import token_logprobs
    from cotflow.algorithms.objectives import TokenBatch
    from models.policy import load_policy
    from models.torch_trainer import Example, collate, encode, make_optimizer, warmup_constant

    job = json.loads((job_dir / "job.json").read_text())
    kw, ds = job["kwargs"], job["ds"]
    objective = cloudpickle.loads((job_dir / "objective.pkl").read_bytes())
    saved = torch.load(job_dir / "logprobs.pt")
    torch.set_num_threads(job["threads"])
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    seed = kw["seed"]
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model, tokenizer = load_policy(job_dir / "in", for_training=True)
    examples = [Example(**e) for e in job["examples"]]
    encoded = [encode(tokenizer, ex, kw["max_len"]) for ex in examples]
    advantages = [ex.advantage for ex in examples]
    correct = torch.tensor([ex.correct for ex in examples], dtype=torch.float32)
    r_hat = torch.tensor([ex.r_hat for ex in examples], dtype=torch.float32)
    mb, gas = kw["micro_batch_size"], kw["grad_accum_steps"]
    config = ds_config(ds, per_rank=mb // world, grad_accum_steps=gas,
                       max_grad_norm=kw["max_grad_norm"], lr=kw["lr"],
                       weight_decay=kw["weight_decay"])
    optimizer = None if ds["offload_optimizer"] else make_optimizer(
        model, lr=kw["lr"], weight_decay=kw["weight_decay"])
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                   config=config)
    device = engine.device
    lr_at = warmup_constant(kw["lr"], kw["warmup_steps"])

    # policy_epochs' batches; each rank keeps its slice of every global micro-batch.
    global_batches = []
    for _ in range(kw["epochs"]):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        global_batches += [order[s:s + mb] for s in range(0, len(order), mb)]
    usable = [b for b in global_batches if len(b) >= world]
    usable = usable[:len(usable) // gas * gas]
    dropped = sum(map(len, global_batches)) - sum(map(len, usable))

    def padded(per_example, index: list[int], width: int):
        if per_example is None:
            return None
        pad = torch.nn.functional.pad
        return torch.stack([pad(per_example[i], (0, width - len(per_example[i])))
                            for i in index]).to(device)

    def loss_of(batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = engine(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits = logits[:, :-1]
        logprobs = token_logprobs(logits, batch.input_ids[:, 1:])
        width = logprobs.shape[1]
        return objective(TokenBatch(
            logprobs=logprobs, logits=logits, mask=batch.response_mask,
            advantages=batch.advantages, old_logprobs=padded(saved["old"], batch.index, width),
            ref_logprobs=padded(saved["ref"], batch.index, width),
            correct=correct[batch.index].to(device), r_hat=r_hat[batch.index].to(device)))

    engine.train()
    sums: dict[str, float] = {}
    curve, grad_norms = [], []
    tokens = steps = 0
    t0 = time.perf_counter()
    for n, idx in enumerate(usable):
        mine = idx[rank::world]
        batch = collate([encoded[i] for i in mine], [advantages[i] for i in mine], mine,
                        tokenizer.pad_token_id)
        for name in ("input_ids", "attention_mask", "response_mask", "advantages"):
            setattr(batch, name, getattr(batch, name).to(device))
        for group in engine.optimizer.param_groups:
            group["lr"] = lr_at(steps)
        loss, extra = loss_of(batch)
        engine.backward(loss)
        engine.step()
        for key, val in {"loss": loss.item(), **extra}.items():
            sums[key] = sums.get(key, 0.0) + val
        curve.append(loss.item())
        tokens += int(batch.attention_mask.sum())
        if (n + 1) % gas == 0:
            steps += 1
            norm = engine.get_global_grad_norm()
            grad_norms.append(float(norm) if norm is not None else 0.0)
    seconds = time.perf_counter() - t0
    # Means over every rank's micro-batches, as one process would have seen them.
    keys = sorted(sums)
    packed = torch.tensor([*(sums[k] for k in keys), tokens, *curve], dtype=torch.float64)
    dist.all_reduce(packed)
    micro = max(len(usable), 1)
    stats = {k: float(packed[i]) / world / micro for i, k in enumerate(keys)}
    stats.update(grad_norm=sum(grad_norms) / max(len(grad_norms), 1), optimizer_steps=steps,
                 micro_batches=len(usable),
                 tokens_per_s=float(packed[len(keys)]) / seconds if seconds else 0.0,
                 seconds=seconds, dropped_examples=dropped, ranks=world,
                 loss_curve=[float(v) / world for v in packed[len(keys) + 1:]])
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        if rank == 0:
            engine.module.save_pretrained(job_dir / "out")
            (job_dir / "result.json").write_text(json.dumps(stats))
    dist.barrier()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="one rank of a cotflow DeepSpeed job")
    parser.add_argument("job", type=Path)
    parser.add_argument("--local_rank", type=int, default=None)  # the deepspeed launcher's
    args, _ = parser.parse_known_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _rank_main(args.job)

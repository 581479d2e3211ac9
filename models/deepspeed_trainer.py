"""`train.backend: deepspeed`: any recipe's training plan under DeepSpeed ZeRO 0-3.

The train stage calls `train_policy_deepspeed` with what it would give the torch trainer's
`train_policy` (examples, objective, units, stage-start and reference log-probs). It writes
them and the policy to a job folder (the objective with cloudpickle), starts the ranks through
torchrun or the deepspeed launcher (hostfile for several nodes; gloo on CPU, nccl on GPUs),
and loads the trained weights back, so the stage saves a plain `save_pretrained`
checkpoint either way. Each rank runs `python -m models.deepspeed_trainer JOB`.

Same steps as the torch trainer (models/steps.py, cut over the ranks): every rank runs the
same number of micro-batches per step. The objective's loss is already a share of the whole
step's (it divides by the step's size over all ranks), so each rank's loss is scaled by
ranks × accumulation before `engine.backward`, which divides by both: the step's gradient
is the sum over micro-batches and ranks, as on one process.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
PROJECT = Path(__file__).resolve().parents[1]
# Rank 0 logs its progress lines under this name into launch.log; the stage's process
# forwards those (and only those: the launcher's own output stays in the file) to its log.
PROGRESS_LOGGER = "cotflow.deepspeed_progress"


def progress_forwarder(emit: Callable[[str], None]) -> Callable[[str], None]:
    """A LogTail callback: `emit` the message of each progress line of launch.log."""
    marker = f" {PROGRESS_LOGGER} "

    def forward(line: str) -> None:
        _, found, message = line.partition(marker)
        if found:
            emit(message)
    return forward


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
    """`train_policy` with this config's DeepSpeed settings filled in."""
    from functools import partial

    return partial(train_policy_deepspeed, ds=cfg.deepspeed, threads=cfg.threads,
                   job_dir=layout.root / ".cache" / "deepspeed-job")


def train_policy_deepspeed(model, pad_id: int, examples: Sequence[Any], objective: Any, *,
                           units: Sequence[Sequence[int]] | None, old: Sequence[Any] | None,
                           ref: Sequence[Any] | None, ds: Any, threads: int, job_dir: Path,
                           checkpoint: Any = None, **kwargs: Any) -> dict[str, float]:
    """Train `model` in place on all ranks; `kwargs` are `train_policy`'s own. Returns its
    statistics, plus the per-step loss curve. `checkpoint` (resume inside a stage) is the
    torch trainer's: here a failed stage reruns from its start."""
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
    job = {"examples": [{**asdict(ex), "extras": dict(ex.extras)} for ex in examples],
           "units": None if units is None else [list(u) for u in units], "pad_id": pad_id,
           "kwargs": kwargs, "threads": threads, "ds": ds.model_dump()}
    (job_dir / "job.json").write_text(json.dumps(job))
    (job_dir / "objective.pkl").write_bytes(cloudpickle.dumps(objective))
    torch.save({"old": None if old is None else list(old),
                "ref": None if ref is None else list(ref)}, job_dir / "logprobs.pt")
    argv = launch_argv(ds, job_dir)
    log.info("launching %d rank(s): %s", ds.num_gpus * ds.num_nodes, shlex.join(argv))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(PROJECT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    from cotflow.log_tail import LogTail

    t0 = time.perf_counter()
    launch_log = job_dir / "launch.log"
    with open(launch_log, "wb") as out, LogTail(launch_log, progress_forwarder(log.info)):
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
              lr: float, betas: Sequence[float], weight_decay: float) -> dict[str, Any]:
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
            "lr": lr, "betas": list(betas), "weight_decay": weight_decay}}
    return cfg


def _rank_main(job_dir: Path) -> None:
    import cloudpickle
    import deepspeed
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from cotflow.recipes.base import Example
    from models.progress_log import ProgressLog
    from models.steps import accumulation, plan_steps
    from models.torch_trainer import (
        collate,
        encode,
        make_optimizer,
        objective_loss,
        step_size,
        units_of,
        warmup_constant,
    )

    job = json.loads((job_dir / "job.json").read_text())
    kw, ds, pad_id = job["kwargs"], job["ds"], job["pad_id"]
    objective = cloudpickle.loads((job_dir / "objective.pkl").read_bytes())
    saved = torch.load(job_dir / "logprobs.pt")
    torch.set_num_threads(job["threads"])
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(kw["seed"])
    model = AutoModelForCausalLM.from_pretrained(job_dir / "in", dtype=torch.float32)
    examples = [Example(tuple(e["prompt_ids"]), tuple(e["completion_ids"]), e["advantage"],
                        e["extras"]) for e in job["examples"]]
    encoded = [encode(ex, kw["max_len"]) for ex in examples]
    groups, unit_of = units_of(job["units"], len(examples))
    sizes = dict(mini_batch_size=kw["mini_batch_size"], micro_batch_size=kw["micro_batch_size"])
    plan = plan_steps(groups, epochs=kw["epochs"], seed=kw["seed"], ranks=world, **sizes)
    gas = accumulation(len(groups), ranks=world, **sizes)
    betas = kw["betas"]
    config = ds_config(ds, per_rank=kw["micro_batch_size"], grad_accum_steps=gas,
                       max_grad_norm=kw["max_grad_norm"], lr=kw["lr"], betas=betas,
                       weight_decay=kw["weight_decay"])
    optimizer = None if ds["offload_optimizer"] else make_optimizer(
        model, lr=kw["lr"], betas=betas, weight_decay=kw["weight_decay"])
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                   config=config)
    device = engine.device
    lr_at = warmup_constant(kw["lr"], kw["warmup_steps"])

    engine.train()
    sums: dict[str, float] = {}
    curve, grad_norms = [], []
    tokens = micro = 0
    t0 = time.perf_counter()
    progress = ProgressLog(f"train (deepspeed, {world} rank{'s' * (world > 1)})", len(plan),
                           logger=logging.getLogger(PROGRESS_LOGGER)) if rank == 0 else None
    with progress or nullcontext():
        for s, step in enumerate(plan):
            size = step_size(encoded, [i for share in step for m in share for i in m], unit_of)
            for group in engine.optimizer.param_groups:
                group["lr"] = lr_at(s)
            step_loss, step_tokens = 0.0, 0
            for mine in step[rank]:
                # A rank with no example in this slot still steps in time with the others: it
                # runs a micro-batch of the step (whole units: a DPO pair stays a pair) at
                # weight 0.
                empty = not mine
                idx = mine or next(m for share in step for m in share if m)
                batch = collate([encoded[i] for i in idx], idx, pad_id)
                for name in ("input_ids", "attention_mask", "response_mask"):
                    setattr(batch, name, getattr(batch, name).to(device))
                loss, extra = objective_loss(engine, objective, batch, size, examples,
                                             old=saved["old"], ref=saved["ref"])
                if empty:
                    loss = loss * 0.0
                engine.backward(loss * (world * gas))  # engine divides by both
                engine.step()
                step_loss += loss.item()
                if not empty:
                    micro += 1
                    step_tokens += int(batch.attention_mask.sum())
                    for key, val in extra.items():
                        sums[key] = sums.get(key, 0.0) + val
            curve.append(step_loss)
            tokens += step_tokens
            # The step's loss and tokens over every rank, for rank 0's progress line: one
            # small collective per step (the ranks step in lockstep anyway).
            shared = torch.tensor([step_loss, step_tokens], dtype=torch.float64, device=device)
            dist.all_reduce(shared)
            if progress is not None:
                progress.step(float(shared[0]), int(shared[1]))
            norm = engine.get_global_grad_norm()
            grad_norms.append(float(norm) if norm is not None else 0.0)
    seconds = time.perf_counter() - t0
    # Sums over ranks: the step loss is the sum of the ranks' shares; other metrics are
    # means over every rank's micro-batches, as one process would have seen them.
    keys = sorted(sums)
    # On the collective's device: nccl reduces CUDA tensors only (gloo, CPU ones).
    packed = torch.tensor([*(sums[k] for k in keys), tokens, micro, *curve],
                          dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    packed = packed.cpu()
    n_micro = max(float(packed[len(keys) + 1]), 1.0)
    losses = [float(v) for v in packed[len(keys) + 2:]]
    stats = {k: float(packed[i]) / n_micro for i, k in enumerate(keys)}
    stats.update(loss=sum(losses) / max(len(losses), 1),
                 grad_norm=sum(grad_norms) / max(len(grad_norms), 1), optimizer_steps=len(plan),
                 micro_batches=int(n_micro),
                 tokens_per_s=float(packed[len(keys)]) / seconds if seconds else 0.0,
                 seconds=seconds, ranks=world, loss_curve=losses)
    if ds["bf16"]:
        _save_fp32_master(engine, job_dir, rank)
    else:
        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            if rank == 0:
                engine.module.save_pretrained(job_dir / "out")
    if rank == 0:
        (job_dir / "result.json").write_text(json.dumps(stats))
    dist.barrier()


def _save_fp32_master(engine, job_dir: Path, rank: int) -> None:
    """Under bf16 the module holds rounded weights and the optimizer the fp32 master copy:
    an update of lr ~1e-6 is below bf16's spacing, so the module's weights would lose it.
    Save the master weights instead (every rank gathers: a collective under ZeRO)."""
    import torch
    from deepspeed.utils import safe_get_full_fp32_param
    from transformers import AutoModelForCausalLM

    full = {}
    for name, param in engine.module.named_parameters():
        value = safe_get_full_fp32_param(param)
        if value is None:  # no master copy for this parameter: the module's is exact
            value = param.detach().float()
        full[name] = value.cpu()
    if rank == 0:
        model = AutoModelForCausalLM.from_pretrained(job_dir / "in", dtype=torch.float32)
        missing, unexpected = model.load_state_dict(full, strict=False)
        if unexpected or any(not k.endswith("lm_head.weight") for k in missing):
            raise RuntimeError(f"fp32 master weights do not fit the model: missing {missing}, "
                               f"unexpected {unexpected}")
        model.save_pretrained(job_dir / "out")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="one rank of a cotflow DeepSpeed job")
    parser.add_argument("job", type=Path)
    parser.add_argument("--local_rank", type=int, default=None)  # the deepspeed launcher's
    args, _ = parser.parse_known_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _rank_main(args.job)

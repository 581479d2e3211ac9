"""Policy updates in plain torch: the SFT warm start, policy-gradient objectives, DPO.

Micro-batches with gradient accumulation, AdamW, gradient clipping. A fresh optimizer
each iteration (the RAFT recipe); the policy is saved by the caller with save_pretrained.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from cotflow.algorithms.dpo import dpo_loss, sequence_logprob
from cotflow.algorithms.losses import raft_loss, token_logprobs
from cotflow.algorithms.objectives import Objective, TokenBatch
from models.checkpoint import Checkpointer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    advantage: float = 1.0
    correct: float = 1.0  # NFT's label
    r_hat: float = 1.0  # NFT: the prompt's clamped share of correct samples


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    response_mask: torch.Tensor  # (B, L-1): 1 where the next token is a response token
    advantages: torch.Tensor  # (B,)
    index: list[int]  # positions of these examples in the caller's list


def encode(tokenizer, ex: Example, max_len: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion + <eos>, and the prompt's length (with <bos>)."""
    prompt_ids = tokenizer(ex.prompt)["input_ids"]
    completion_ids = tokenizer(ex.completion, add_special_tokens=False)["input_ids"]
    ids = (prompt_ids + completion_ids + [tokenizer.eos_token_id])[:max_len]
    return ids, len(prompt_ids)


def collate(encoded: Sequence[tuple[list[int], int]], advantages: Sequence[float],
            index: list[int], pad_id: int) -> Batch:
    """Right-pad a list of encoded examples into tensors."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    response = torch.zeros((len(encoded), width - 1))
    for row, (ids, prompt_len) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        response[row, prompt_len - 1 : len(ids) - 1] = 1.0
    return Batch(input_ids, attention, response, torch.tensor(advantages, dtype=torch.float32),
                 index)


def batch_logprobs(model, batch: Batch) -> torch.Tensor:
    """log π(token) of each next token: (B, L-1)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return token_logprobs(logits[:, :-1], batch.input_ids[:, 1:])


def make_optimizer(model, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98),
                             weight_decay=weight_decay)


def optimize(
    model, optimizer: torch.optim.Optimizer, micro_batches: Iterator[Batch],
    loss_fn: Callable[[Batch], tuple[torch.Tensor, dict[str, float]]], *,
    grad_accum_steps: int, max_grad_norm: float,
    lr_at: Callable[[int], float] | None = None,
    checkpoint: Checkpointer | None = None,
) -> dict[str, float]:
    """Run optimizer steps over micro-batches; return mean loss and other statistics.

    With `checkpoint`, save a resume point every `checkpoint.every` optimizer steps and
    start from the last one saved: `micro_batches` must then yield the same sequence on
    every run (seeded), since the micro-batches already consumed are skipped.
    """
    model.train()
    sums: dict[str, float] = {}
    steps = micro = tokens = 0
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        sums, steps, micro, tokens = (dict(state["sums"]), state["steps"], state["micro"],
                                      state["tokens"])
        micro_batches = itertools.islice(micro_batches, micro, None)
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    pending = 0
    for batch in micro_batches:
        loss, extra = loss_fn(batch)
        (loss / grad_accum_steps).backward()
        for key, val in {"loss": loss.item(), **extra}.items():
            sums[key] = sums.get(key, 0.0) + val
        micro += 1
        pending += 1
        tokens += int(batch.attention_mask.sum())
        if pending == grad_accum_steps:
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + _step(
                model, optimizer, max_grad_norm, lr_at(steps) if lr_at else None)
            steps += 1
            pending = 0
            if checkpoint is not None and checkpoint.due(steps):
                checkpoint.save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                    "sums": sums, "steps": steps, "micro": micro, "tokens": tokens})
    if pending:
        # A short last accumulation: rescale so its step is a mean over what it saw.
        for param in model.parameters():
            if param.grad is not None:
                param.grad.mul_(grad_accum_steps / pending)
        sums["grad_norm"] = sums.get("grad_norm", 0.0) + _step(
            model, optimizer, max_grad_norm, lr_at(steps) if lr_at else None)
        steps += 1
    seconds = time.perf_counter() - t0
    stats = {k: v / max(micro, 1) for k, v in sums.items() if k != "grad_norm"}
    stats.update(grad_norm=sums.get("grad_norm", 0.0) / max(steps, 1), optimizer_steps=steps,
                 micro_batches=micro, tokens_per_s=tokens / seconds if seconds else 0.0,
                 seconds=seconds)
    return stats


def _step(model, optimizer, max_grad_norm: float, lr: float | None) -> float:
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def warmup_constant(lr: float, warmup: int) -> Callable[[int], float]:
    """Linear warmup, then constant. A fresh AdamW's first steps move every weight by about
    lr whatever its gradient; ramping up keeps them from undoing the warm start."""
    return lambda step: lr * min(1.0, (step + 1) / warmup) if warmup else lr


def warmup_cosine(lr: float, warmup: int, total: int) -> Callable[[int], float]:
    def at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
    return at


def sft_steps(model, tokenizer, examples: Sequence[Example], *, steps: int, batch_size: int,
              lr: float, warmup_steps: int, weight_decay: float, max_grad_norm: float,
              seed: int, max_len: int,
              checkpoint: Checkpointer | None = None) -> dict[str, float]:
    """Warm start: `steps` optimizer steps on random batches of worked solutions."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    encoded = [encode(tokenizer, ex, max_len) for ex in examples]

    def batches() -> Iterator[Batch]:
        for _ in range(steps):
            idx = rng.sample(range(len(encoded)), min(batch_size, len(encoded)))
            yield collate([encoded[i] for i in idx], [1.0] * len(idx), idx,
                          tokenizer.pad_token_id)

    optimizer = make_optimizer(model, lr=lr, weight_decay=weight_decay)
    return optimize(model, optimizer, batches(), lambda b: _raft(model, b), grad_accum_steps=1,
                    max_grad_norm=max_grad_norm, lr_at=warmup_cosine(lr, warmup_steps, steps),
                    checkpoint=checkpoint)


def _raft(model, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    return raft_loss(batch_logprobs(model, batch), batch.advantages, batch.response_mask), {}


def stage_start_logprobs(model, tokenizer, examples: Sequence[Example], *, micro_batch_size: int,
                         max_len: int) -> list[torch.Tensor]:
    """log π of every response token under `model` as it is now (the stage-start policy, or
    a reference), per example: the old log-probs of the ratio ρ and of KL terms."""
    encoded = [encode(tokenizer, ex, max_len) for ex in examples]
    return _old_logprobs(model, encoded, [ex.advantage for ex in examples], micro_batch_size,
                         tokenizer.pad_token_id)


def policy_epochs(model, tokenizer, examples: Sequence[Example], objective: Objective, *,
                  old: Sequence[torch.Tensor] | None, ref: Sequence[torch.Tensor] | None,
                  epochs: int, micro_batch_size: int, grad_accum_steps: int, lr: float,
                  warmup_steps: int, weight_decay: float, max_grad_norm: float, seed: int,
                  max_len: int, checkpoint: Checkpointer | None = None) -> dict[str, float]:
    """`epochs` shuffled passes over `examples` in micro-batches; each optimizer step is one
    mini-batch of micro_batch_size × grad_accum_steps examples, so an iteration takes several
    off-policy steps after the first (hence the ratio clip against `old`)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    encoded = [encode(tokenizer, ex, max_len) for ex in examples]
    advantages = [ex.advantage for ex in examples]
    correct = torch.tensor([ex.correct for ex in examples], dtype=torch.float32)
    r_hat = torch.tensor([ex.r_hat for ex in examples], dtype=torch.float32)

    def batches() -> Iterator[Batch]:
        for _ in range(epochs):
            order = list(range(len(encoded)))
            rng.shuffle(order)
            for s in range(0, len(order), micro_batch_size):
                idx = order[s : s + micro_batch_size]
                yield collate([encoded[i] for i in idx], [advantages[i] for i in idx], idx,
                              tokenizer.pad_token_id)

    def padded(per_example: Sequence[torch.Tensor] | None, batch: Batch,
               width: int) -> torch.Tensor | None:
        if per_example is None:
            return None
        pad = torch.nn.functional.pad
        return torch.stack([pad(per_example[i], (0, width - len(per_example[i])))
                            for i in batch.index])

    def loss_fn(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits = logits[:, :-1]
        logprobs = token_logprobs(logits, batch.input_ids[:, 1:])
        width = logprobs.shape[1]
        return objective(TokenBatch(
            logprobs=logprobs, logits=logits, mask=batch.response_mask,
            advantages=batch.advantages, old_logprobs=padded(old, batch, width),
            ref_logprobs=padded(ref, batch, width), correct=correct[batch.index],
            r_hat=r_hat[batch.index]))

    optimizer = make_optimizer(model, lr=lr, weight_decay=weight_decay)
    return optimize(model, optimizer, batches(), loss_fn, grad_accum_steps=grad_accum_steps,
                    max_grad_norm=max_grad_norm, lr_at=warmup_constant(lr, warmup_steps),
                    checkpoint=checkpoint)


def dpo_epochs(model, tokenizer, pairs: Sequence[tuple[Example, Example]], *, beta: float,
               epochs: int, micro_batch_size: int, grad_accum_steps: int, lr: float,
               warmup_steps: int, weight_decay: float, max_grad_norm: float, seed: int,
               max_len: int, checkpoint: Checkpointer | None = None) -> dict[str, float]:
    """DPO over (chosen, rejected) pairs; the reference is the policy at the stage's start
    (specs/algorithms-b.md §1.6). A micro-batch holds micro_batch_size pairs."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    chosen = [encode(tokenizer, c, max_len) for c, _ in pairs]
    rejected = [encode(tokenizer, r, max_len) for _, r in pairs]
    pad = tokenizer.pad_token_id

    def pair_batch(idx: list[int]) -> Batch:
        # Chosen rows first, then rejected; index names each row's pair.
        return collate([chosen[i] for i in idx] + [rejected[i] for i in idx],
                       [1.0] * (2 * len(idx)), idx + idx, pad)

    def seq_logps(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logps = sequence_logprob(batch_logprobs(model, batch), batch.response_mask)
        half = len(batch.index) // 2
        return logps[:half], logps[half:]

    with torch.no_grad():
        model.train(False)
        ref_c, ref_r = torch.zeros(len(pairs)), torch.zeros(len(pairs))
        for s in range(0, len(pairs), micro_batch_size):
            idx = list(range(s, min(s + micro_batch_size, len(pairs))))
            ref_c[idx], ref_r[idx] = seq_logps(pair_batch(idx))

    def batches() -> Iterator[Batch]:
        for _ in range(epochs):
            order = list(range(len(pairs)))
            rng.shuffle(order)
            for s in range(0, len(order), micro_batch_size):
                yield pair_batch(order[s : s + micro_batch_size])

    def loss_fn(batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        idx = batch.index[: len(batch.index) // 2]
        c, r = seq_logps(batch)
        loss, z = dpo_loss(c, r, ref_c[idx], ref_r[idx], beta=beta)
        return loss, {"reward_accuracy": float((z > 0).float().mean()),
                      "margin": float(z.detach().mean())}

    optimizer = make_optimizer(model, lr=lr, weight_decay=weight_decay)
    return optimize(model, optimizer, batches(), loss_fn, grad_accum_steps=grad_accum_steps,
                    max_grad_norm=max_grad_norm, lr_at=warmup_constant(lr, warmup_steps),
                    checkpoint=checkpoint)


@torch.no_grad()
def _old_logprobs(model, encoded, advantages, micro_batch_size: int,
                  pad_id: int) -> list[torch.Tensor]:
    """log-probs of the policy as it is now, per example."""
    model.train(False)
    out: list[torch.Tensor] = []
    for s in range(0, len(encoded), micro_batch_size):
        idx = list(range(s, min(s + micro_batch_size, len(encoded))))
        batch = collate([encoded[i] for i in idx], [advantages[i] for i in idx], idx, pad_id)
        logprobs = batch_logprobs(model, batch)
        out.extend(logprobs[row, : len(encoded[i][0]) - 1].clone() for row, i in enumerate(idx))
    return out

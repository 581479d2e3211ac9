"""Policy updates in plain torch: the SFT warm start, and any recipe's training plan.

The trainer knows no algorithm. It cuts a plan's examples into optimizer steps and
micro-batches (models/steps.py), runs the policy on exactly the token ids that were
sampled, and hands the recipe's objective a `TokenBatch` with the step's size, so every
aggregation is over the whole optimizer step however it is split. A fresh AdamW each
iteration; the caller saves the policy with save_pretrained.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cotflow.algorithms.losses import raft_loss, token_logprobs
from cotflow.recipes.base import Example, Objective, StepSize, TokenBatch
from models.checkpoint import Checkpointer
from models.progress_log import ProgressLog
from models.steps import plan_steps

log = logging.getLogger(__name__)


def text_example(tokenizer, prompt: str | Sequence[int], completion: str, *,
                 finished: bool = True) -> Example:
    """An example from text (a worked solution): EOS appended only if it is `finished`.
    A prompt given as ids (models/prompts.py) is taken as it is."""
    prompt_ids = tokenizer(prompt)["input_ids"] if isinstance(prompt, str) else prompt
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if finished:
        completion_ids = [*completion_ids, tokenizer.eos_token_id]
    return Example(tuple(prompt_ids), tuple(completion_ids))


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    response_mask: torch.Tensor  # (B, L-1): 1 where the next token is a completion token
    prompt_lens: list[int]
    index: list[int]  # positions of these examples in the caller's list


def encode(ex: Example, max_len: int) -> tuple[list[int], int]:
    """The sampled ids, prompt then completion, cut to the context; and the prompt's length.
    No EOS is added: a completion has one only if the model produced it."""
    ids = [*ex.prompt_ids, *ex.completion_ids][:max_len]
    return ids, len(ex.prompt_ids)


def response_tokens(encoded: tuple[list[int], int]) -> int:
    ids, prompt_len = encoded
    return max(len(ids) - prompt_len, 0)


def collate(encoded: Sequence[tuple[list[int], int]], index: list[int], pad_id: int) -> Batch:
    """Right-pad a list of encoded examples into tensors."""
    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    response = torch.zeros((len(encoded), width - 1))
    for row, (ids, prompt_len) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        response[row, prompt_len - 1 : len(ids) - 1] = 1.0
    return Batch(input_ids, attention, response, [p for _, p in encoded], index)


def batch_logprobs(model, batch: Batch, temperature: float = 1.0) -> torch.Tensor:
    """log π(token) of each next token: (B, L-1); of the policy sampled at `temperature`
    (logits / T) when given."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    if temperature != 1.0:
        logits = logits / temperature
    return token_logprobs(logits[:, :-1], batch.input_ids[:, 1:])


def make_optimizer(model, *, lr: float, betas: Sequence[float],
                   weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(betas[0], betas[1]),
                             weight_decay=weight_decay)


@dataclass
class Step:
    batches: list[Batch]  # this process's micro-batches of the step
    size: StepSize  # the whole step's, over every micro-batch and rank


LossFn = Callable[[Batch, StepSize], tuple[torch.Tensor, dict[str, float]]]


def optimize(
    model, optimizer: torch.optim.Optimizer, steps: Iterator[Step], loss_fn: LossFn, *,
    max_grad_norm: float, total: int, label: str,
    lr_at: Callable[[int], float] | None = None, checkpoint: Checkpointer | None = None,
) -> dict[str, Any]:
    """One optimizer step per `Step`: the micro-batches' losses are shares of the step's
    loss (the objective divides by the step's size), so their gradients are summed, not
    averaged. Returns the mean step loss and the other statistics, and `history`: per
    step, its loss, grad norm and the objective's metrics (means over its micro-batches).

    With `checkpoint`, save a resume point every `checkpoint.every` optimizer steps and
    start from the last one saved: `steps` must then be the same sequence on every run
    (seeded), since the steps already taken are skipped. Of the `total` steps expected, the
    loop logs its progress under `label` (models/progress_log.py).
    """
    model.train()
    sums: dict[str, float] = {}
    history: list[dict[str, float]] = []  # per optimizer step: loss and the step's means
    steps_done = micro = tokens = 0
    state = checkpoint.load() if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        sums, steps_done, micro, tokens = (dict(state["sums"]), state["steps"], state["micro"],
                                           state["tokens"])
        history = list(state.get("history", []))
        steps = itertools.islice(steps, steps_done, None)
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with ProgressLog(label, total, logger=log, start=steps_done) as progress:
        for step in steps:
            step_loss = 0.0
            step_sums: dict[str, float] = {}
            step_tokens = 0
            for batch in step.batches:
                loss, extra = loss_fn(batch, step.size)
                loss.backward()
                step_loss += loss.item()
                for key, val in extra.items():
                    step_sums[key] = step_sums.get(key, 0.0) + val
                micro += 1
                step_tokens += int(batch.attention_mask.sum())
            for key, val in step_sums.items():
                sums[key] = sums.get(key, 0.0) + val
            norm = _step(model, optimizer, max_grad_norm, lr_at(steps_done) if lr_at else None)
            sums["loss"] = sums.get("loss", 0.0) + step_loss
            sums["grad_norm"] = sums.get("grad_norm", 0.0) + norm
            steps_done += 1
            tokens += step_tokens
            progress.step(step_loss, step_tokens)
            n_micro = max(len(step.batches), 1)
            history.append({"step": steps_done, "loss": step_loss, "grad_norm": norm,
                            **{k: v / n_micro for k, v in step_sums.items()}})
            if checkpoint is not None and checkpoint.due(steps_done):
                checkpoint.save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
                    "sums": sums, "steps": steps_done, "micro": micro, "tokens": tokens,
                    "history": history})
    seconds = time.perf_counter() - t0
    per_step = ("loss", "grad_norm")
    stats = {k: v / max(micro, 1) for k, v in sums.items() if k not in per_step}
    stats.update({k: sums.get(k, 0.0) / max(steps_done, 1) for k in per_step})
    stats.update(optimizer_steps=steps_done, micro_batches=micro,
                 tokens_per_s=tokens / seconds if seconds else 0.0, seconds=seconds)
    return {**stats, "history": history}


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


def sft_steps(model, pad_id: int, examples: Sequence[Example], *, steps: int, batch_size: int,
              lr: float, warmup_steps: int, betas: Sequence[float], weight_decay: float,
              max_grad_norm: float, seed: int, max_len: int,
              checkpoint: Checkpointer | None = None) -> dict[str, Any]:
    """Warm start: `steps` optimizer steps on random batches of worked solutions."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    encoded = [encode(ex, max_len) for ex in examples]

    def batches() -> Iterator[Step]:
        for _ in range(steps):
            idx = rng.sample(range(len(encoded)), min(batch_size, len(encoded)))
            rows = [encoded[i] for i in idx]
            yield Step([collate(rows, idx, pad_id)],
                       StepSize(sum(map(response_tokens, rows)), len(idx), len(idx)))

    def sft(batch: Batch, size: StepSize) -> tuple[torch.Tensor, dict[str, float]]:
        logprobs = batch_logprobs(model, batch)
        ones = torch.ones(len(batch.index))
        return raft_loss(logprobs, ones, batch.response_mask, tokens=size.tokens), {}

    optimizer = make_optimizer(model, lr=lr, betas=betas, weight_decay=weight_decay)
    return optimize(model, optimizer, batches(), sft, max_grad_norm=max_grad_norm,
                    total=steps, label="warm start",
                    lr_at=warmup_cosine(lr, warmup_steps, steps), checkpoint=checkpoint)


@torch.no_grad()
def stage_start_logprobs(model, pad_id: int, examples: Sequence[Example], *,
                         micro_batch_size: int, max_len: int,
                         temperature: float = 1.0) -> list[torch.Tensor]:
    """log π of every next token (prompt and completion) under `model` as it is now (the
    stage-start policy, or a reference), per example: the old log-probs of the ratio ρ and
    of KL terms (at a sampling `temperature`: SPO's cutpoint probabilities)."""
    model.train(False)
    encoded = [encode(ex, max_len) for ex in examples]
    out: list[torch.Tensor] = []
    for s in range(0, len(encoded), micro_batch_size):
        idx = list(range(s, min(s + micro_batch_size, len(encoded))))
        logprobs = batch_logprobs(model, collate([encoded[i] for i in idx], idx, pad_id),
                                  temperature)
        out.extend(logprobs[row, : len(encoded[i][0]) - 1].clone() for row, i in enumerate(idx))
    return out


def _padded(per_example: Sequence[torch.Tensor] | None, index: list[int],
            fill: torch.Tensor) -> torch.Tensor | None:
    """Per-example token log-probs for the rows of a batch, padded with `fill`'s values
    (the policy's own, detached): a ratio or KL term at a padding position is then 1 or 0
    instead of exp(0 − log π), whose gradient overflows to nan under the mask."""
    if per_example is None:
        return None
    out = fill.detach().clone()
    for row, i in enumerate(index):
        values = per_example[i][: out.shape[1]]
        out[row, : len(values)] = values.to(out.device)
    return out


def _extras(examples: Sequence[Example], batch: Batch, width: int,
            device: torch.device) -> dict[str, torch.Tensor]:
    """Each extra as (B,) for per-sequence values, or (B, width) placed on the completion
    tokens' positions for per-token ones."""
    out: dict[str, torch.Tensor] = {}
    for key in examples[batch.index[0]].extras:
        values = [examples[i].extras[key] for i in batch.index]
        if isinstance(values[0], int | float):
            out[key] = torch.tensor(values, dtype=torch.float32, device=device)
            continue
        grid = torch.zeros((len(values), width), device=device)
        for row, (v, start) in enumerate(zip(values, batch.prompt_lens, strict=True)):
            v = list(v)[: max(width - (start - 1), 0)]
            grid[row, start - 1 : start - 1 + len(v)] = torch.tensor(v, dtype=torch.float32)
        out[key] = grid
    return out


def objective_loss(model, objective: Objective, batch: Batch, size: StepSize,
                   examples: Sequence[Example], *, old: Sequence[torch.Tensor] | None,
                   ref: Sequence[torch.Tensor] | None) -> tuple[torch.Tensor, dict[str, float]]:
    """One micro-batch's share of its step's loss: the policy's forward pass, and what the
    stage computed before training (old and reference log-probs) for the batch's rows."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logits = logits[:, :-1]
    logprobs = token_logprobs(logits, batch.input_ids[:, 1:])
    width, device = logprobs.shape[1], logprobs.device
    return objective(TokenBatch(
        logprobs=logprobs, logits=logits, mask=batch.response_mask.to(device),
        advantages=torch.tensor([examples[i].advantage for i in batch.index],
                                dtype=torch.float32, device=device),
        step=size, old_logprobs=_padded(old, batch.index, logprobs),
        ref_logprobs=_padded(ref, batch.index, logprobs),
        extras=_extras(examples, batch, width, device)))


def step_size(encoded: Sequence[tuple[list[int], int]], index: Sequence[int],
              unit_of: dict[int, int]) -> StepSize:
    """The step's completion tokens, sequences and units, over all its micro-batches."""
    return StepSize(sum(response_tokens(encoded[i]) for i in index), len(index),
                    len({unit_of[i] for i in index}))


def units_of(units: Sequence[Sequence[int]] | None, n: int) -> tuple[list[list[int]],
                                                                     dict[int, int]]:
    """The plan's units (singles when None) and each example's unit."""
    out = [list(u) for u in units] if units else [[i] for i in range(n)]
    return out, {i: u for u, members in enumerate(out) for i in members}


def train_policy(model, pad_id: int, examples: Sequence[Example], objective: Objective, *,
                 units: Sequence[Sequence[int]] | None = None,
                 old: Sequence[torch.Tensor] | None, ref: Sequence[torch.Tensor] | None,
                 epochs: int, mini_batch_size: int, micro_batch_size: int, lr: float,
                 warmup_steps: int, betas: Sequence[float], weight_decay: float,
                 max_grad_norm: float, seed: int, max_len: int,
                 checkpoint: Checkpointer | None = None) -> dict[str, Any]:
    """`epochs` shuffled passes over the plan's examples, one optimizer step per mini-batch
    of `mini_batch_size` units; steps after the first are off-policy, hence the ratio clip
    against `old` in the objectives that need it."""
    torch.manual_seed(seed)
    encoded = [encode(ex, max_len) for ex in examples]
    groups, unit_of = units_of(units, len(examples))
    plan = plan_steps(groups, epochs=epochs, mini_batch_size=mini_batch_size,
                      micro_batch_size=micro_batch_size, seed=seed)

    def steps() -> Iterator[Step]:
        for (micros,) in plan:  # one rank
            index = [i for m in micros for i in m]
            yield Step([collate([encoded[i] for i in m], m, pad_id) for m in micros if m],
                       step_size(encoded, index, unit_of))

    def loss_fn(batch: Batch, size: StepSize) -> tuple[torch.Tensor, dict[str, float]]:
        return objective_loss(model, objective, batch, size, examples, old=old, ref=ref)

    optimizer = make_optimizer(model, lr=lr, betas=betas, weight_decay=weight_decay)
    return optimize(model, optimizer, steps(), loss_fn, max_grad_norm=max_grad_norm,
                    total=len(plan), label="train", lr_at=warmup_constant(lr, warmup_steps),
                    checkpoint=checkpoint)

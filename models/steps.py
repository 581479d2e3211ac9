"""How a rollout batch becomes optimizer steps and micro-batches (pure; both trainers).

Sizes as verl and the papers name them: the rollout batch is the iteration's examples;
`mini_batch_size` examples (units) make one optimizer step; `epochs` passes over the
rollout batch; `micro_batch_size` examples per forward pass and rank, with gradient
accumulation inside the step. So steps per iteration ≈ epochs × examples / mini_batch_size
(e.g. GVM and Minimal-RL: 4, DAPO and NFT: 16, oat/SEED: 1).

Each epoch shuffles the units (seeded) and cuts them into max(1, round(n / mini_batch_size))
mini-batches of near-equal size, so a leftover of a few examples never gets an optimizer
step of its own. A step is cut over `ranks` and then into the same number of micro-batches
on every rank (DeepSpeed steps all ranks together); a micro-batch may be empty when a step
has fewer units than slots. Units keep their examples together (a DPO pair).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

# steps[s][rank][k] -> the example indices of micro-batch k of rank `rank` in step s
Plan = list[list[list[list[int]]]]


def split_even(items: Sequence, parts: int) -> list[list]:
    """`items` in order, cut into `parts` runs whose sizes differ by at most one."""
    base, extra = divmod(len(items), parts)
    out, start = [], 0
    for p in range(parts):
        size = base + (p < extra)
        out.append(list(items[start:start + size]))
        start += size
    return out


def steps_per_epoch(n_units: int, mini_batch_size: int) -> int:
    return max(1, round(n_units / mini_batch_size))


def accumulation(n_units: int, *, mini_batch_size: int, micro_batch_size: int,
                 ranks: int = 1) -> int:
    """Micro-batches per rank in every step: enough for the largest step."""
    largest = math.ceil(n_units / steps_per_epoch(n_units, mini_batch_size))
    return max(1, math.ceil(largest / (ranks * micro_batch_size)))


def plan_steps(units: Sequence[Sequence[int]], *, epochs: int, mini_batch_size: int,
               micro_batch_size: int, seed: int, ranks: int = 1) -> Plan:
    """The optimizer steps of `epochs` shuffled passes over `units` (lists of example
    indices). Deterministic for a seed, so a resumed run replays the same steps."""
    for name, value in (("epochs", epochs), ("mini_batch_size", mini_batch_size),
                        ("micro_batch_size", micro_batch_size), ("ranks", ranks)):
        if value < 1:
            raise ValueError(f"{name}={value} must be >= 1")
    if not units:
        return []
    rng = random.Random(seed)
    per_epoch = steps_per_epoch(len(units), mini_batch_size)
    gas = accumulation(len(units), mini_batch_size=mini_batch_size,
                       micro_batch_size=micro_batch_size, ranks=ranks)
    plan: Plan = []
    for _ in range(epochs):
        order = list(range(len(units)))
        rng.shuffle(order)
        for step in split_even(order, per_epoch):
            plan.append([[[i for u in micro for i in units[u]] for micro in split_even(share, gas)]
                         for share in split_even(step, ranks)])
    return plan

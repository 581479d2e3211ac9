"""SPO-chain's sampling work (specs/algorithms-b.md §2.3 steps 2-6): the policy's token
probabilities at the sampling temperature, segment boundaries, and N Monte Carlo
continuations from the state before each boundary, graded into values.

This is the sample stage's work, so its results are DVC outputs (values.parquet,
continuations.parquet) and a resumed or reproduced run does not resample them; the
advantages built from them are the spo recipe's (cotflow/recipes/spo.py).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from cotflow.algorithms.spo import answer_markers, segment_boundaries, spo_reward
from cotflow.config import PipelineConfig


def token_probs(model, pad_id: int, rows: list[dict[str, Any]], *, temperature: float,
                micro_batch_size: int, max_len: int) -> list[list[float]]:
    """π_old(token) of each completion token of `rows`, logits / temperature (the paper
    takes them from the training model's forward, not from the sampler)."""
    import torch

    from cotflow.recipes.base import Example
    from models.torch_trainer import stage_start_logprobs

    examples = [Example(tuple(r["prompt_ids"]), tuple(r["completion_ids"])) for r in rows]
    with torch.inference_mode():
        lps = stage_start_logprobs(model, pad_id, examples, micro_batch_size=micro_batch_size,
                                   max_len=max_len, temperature=temperature)
    out = []
    for lp, r in zip(lps, rows, strict=True):
        p = lp[len(r["prompt_ids"]) - 1:].exp().tolist()
        # Tokens past the context cannot be trained: no cutpoint there (p = 1).
        out.append(p + [1.0] * (len(r["completion_ids"]) - len(p)))
    return out


def continuation_seed(seed: int, budget: int) -> int:
    return random.Random(f"{seed}/mc/{budget}").randrange(2**31)


def mc_values(cfg: PipelineConfig, problems: dict[str, dict[str, Any]],
              rows: list[dict[str, Any]], policy: Path, sampler: Any, *, seed: int
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(values rows, continuation rows, stats) for the sampled `rows` of `policy`."""
    from cotflow.verify.pool import VerifierPool
    from cotflow.verify.rewards import is_correct
    from cotflow.verify.scoring import rewards_of
    from models.policy import context_length, load_policy

    s, seg, v = cfg.sample, cfg.sample.segments, cfg.verify
    model, tokenizer = load_policy(policy)
    probs = token_probs(model, tokenizer.pad_token_id, rows, temperature=s.temperature,
                        micro_batch_size=s.batch_size,
                        max_len=context_length(model, cfg))
    bounds = [segment_boundaries(p, seg.interval, seg.rho) for p in probs]
    # Each state (prompt + the response's first b tokens) is valued once, however many
    # responses share it (the code deduplicates identical prefixes before generating).
    states: dict[tuple[int, ...], tuple[int, int]] = {}
    for i, (r, bs) in enumerate(zip(rows, bounds, strict=True)):
        for b in bs:
            states.setdefault(tuple(r["prompt_ids"]) + tuple(r["completion_ids"][:b]), (i, b))
    # A continuation may use what the response had left, so a full trajectory keeps the
    # sample budget; continuations are grouped by that budget.
    by_budget: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for key, (_, b) in states.items():
        by_budget[s.max_new_tokens - b].append(key)
    conts: list[dict[str, Any]] = []
    texts: list[str] = []
    for budget, keys in sorted(by_budget.items()):
        prompts = [k for k in keys for _ in range(seg.rollouts)]
        got = sampler.generate(prompts, max_new_tokens=budget, temperature=s.temperature,
                               top_p=s.top_p, seed=continuation_seed(seed, budget))
        for key, c in zip(prompts, got, strict=True):
            i, b = states[key]
            r = rows[i]
            conts.append({"prompt_id": r["prompt_id"], "sample_idx": r["sample_idx"],
                          "prefix_tokens": b, "completion_ids": c.token_ids,
                          "finished": c.finished})
            texts.append(tokenizer.decode(list(r["completion_ids"][:b]) + c.token_ids,
                                          skip_special_tokens=True))
    golds = [problems[c["prompt_id"]]["answer"] for c in conts]
    with VerifierPool(workers=v.workers, timeout_s=v.timeout_s, memory_mb=v.memory_mb) as pool:
        rewards = rewards_of(v, pool, golds, texts)[1] if conts else []
    returns: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    for c, reward, text in zip(conts, rewards, texts, strict=True):
        # A continuation cut off by the length limit earns 0 (§2.3 step 6).
        c["reward"] = spo_reward(is_correct(reward), c["finished"], answer_markers(text))
        returns[(c["prompt_id"], c["sample_idx"], c["prefix_tokens"])].append(c["reward"])
    values = []
    for r, p, bs in zip(rows, probs, bounds, strict=True):
        vs = []
        for b in bs:
            j, b0 = states[tuple(r["prompt_ids"]) + tuple(r["completion_ids"][:b])]
            got = returns[(rows[j]["prompt_id"], rows[j]["sample_idx"], b0)]
            vs.append(sum(got) / len(got))
        values.append({"prompt_id": r["prompt_id"], "sample_idx": r["sample_idx"],
                       "probs": p, "boundaries": bs, "values": vs})
    return values, conts, _stats(rows, probs, bounds, values, conts, seg.rho)


def _stats(rows, probs, bounds, values, conts, rho: float) -> dict[str, Any]:
    import statistics

    n = max(len(rows), 1)
    tokens = max(sum(len(p) for p in probs), 1)
    spread = [statistics.pstdev(v["values"]) for v in values if len(v["values"]) > 1]
    return {
        "mc_samples": len(conts),
        "segments_per_response": round(sum(len(b) for b in bounds) / n, 4),
        "cutpoints_per_response": round(sum(sum(x < rho for x in p) for p in probs) / n, 4),
        "low_probability_token_share": round(
            sum(sum(x < rho for x in p) for p in probs) / tokens, 6),
        "value_spread": round(sum(spread) / len(spread), 6) if spread else 0.0,
        "mc_finished_fraction": round(sum(c["finished"] for c in conts) / max(len(conts), 1),
                                      6),
    }

"""allocate: which training prompts this iteration samples, and how many samples each.

`allocate.prompts_per_iteration` prompts are drawn without replacement (seeded by the
iteration). Then, by `allocate.method`:
- uniform: `allocate.n` samples each;
- gvm (specs/algorithms-a.md §1): a probe of N' samples per prompt from the previous
  policy, graded as the verify stage grades; p_i = accepted / probed, G_i = the mean over
  accepted probe samples of the per-sample gradient norm (models/grad_norms.py); then
  n_i ∝ G_i / sqrt(p_i + α/p_i^(β−1)) summing to the budget (cotflow/algorithms/gvm.py).
  With `probe: reuse`, a prompt that the previous iteration sampled is probed with those
  samples and verdicts instead (no new samples; p_i from however many it drew, G_i w.r.t.
  the current policy); the others are probed afresh.

Prompts the previous iteration's verifier marked `drop_prompt` (VerIPO's pruning of
always-solved prompts between loops) are not drawn. An iteration whose recipe reuses the
previous iteration's rollouts (veripo, `rollouts: prev`) allocates nothing.

Outputs: allocation.parquet (prompt_id, n; n may be 0) and budget.parquet (per prompt:
probe_samples, probe_reused, accepted, p, G, ratio, n; empty for uniform).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import defaultdict
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.records import read_table, write_table

log = logging.getLogger(__name__)


def choose_prompts(ids: list[str], count: int, seed: int, key: str) -> list[str]:
    """A seeded draw that differs per iteration and is stable across reruns."""
    if count > len(ids):
        raise ValueError(f"allocate.prompts_per_iteration={count} exceeds the {len(ids)} "
                         "training problems")
    return random.Random(f"{seed}/{key}").sample(ids, count)


def probe_seed(cfg: PipelineConfig, key: str) -> int:
    """The probe's sampling seed: apart from the sample stage's, so the probe and the
    samples trained on are independent draws."""
    return int.from_bytes(hashlib.sha256(f"probe/{cfg.seed}/{key}".encode()).digest()[:4], "big")


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from cotflow.recipes import recipe_for

    a = cfg.allocate
    algo = cfg.algorithm(it.key)
    if recipe_for(algo.kind).reuses_prev_rollouts(algo):
        write_table(it.budget, "budget", [])
        write_table(it.allocation, "allocation", [])
        return {"method": "reuse", "prompts": 0, "samples": 0, "probe_samples": 0,
                "zero_share": 0.0, "pruned": 0}, {}
    ids = read_table(layout.train_set, "problems")["id"]
    pruned = _pruned(it)
    ids = [i for i in ids if i not in pruned] if pruned else ids
    chosen = choose_prompts(ids, a.prompts_per_iteration, cfg.seed, it.key)
    if a.method == "uniform":
        write_table(it.budget, "budget", [])
        write_table(it.allocation, "allocation", {"prompt_id": chosen, "n": [a.n] * len(chosen)})
        return {"method": "uniform", "prompts": len(chosen), "samples": a.n * len(chosen),
                "probe_samples": 0, "zero_share": 0.0, "pruned": len(pruned)}, {}
    stats, timing = _gvm(cfg, layout, it, chosen)
    return {**stats, "pruned": len(pruned)}, timing


def _pruned(it: IterationLayout) -> set[str]:
    """Prompts the previous iteration's verifier dropped (empty when it ran none; a base
    folder from before flags existed has none)."""
    if not it.prev_flags.is_file():
        return set()
    flags = read_table(it.prev_flags, "flags")
    return {pid for pid, drop in zip(flags["prompt_id"], flags["drop_prompt"], strict=True)
            if drop}


def _reused_probe(it: IterationLayout, chosen: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The previous iteration's samples of the chosen prompts, with their rewards."""
    if not (it.prev_samples.is_file() and it.prev_verdicts.is_file()):
        return {}
    samples = read_table(it.prev_samples, "samples")
    verdicts = read_table(it.prev_verdicts, "verdicts")
    keys = list(zip(samples["prompt_id"], samples["sample_idx"], strict=True))
    if keys != list(zip(verdicts["prompt_id"], verdicts["sample_idx"], strict=True)):
        raise ValueError(f"{it.prev_verdicts} does not line up with {it.prev_samples}")
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for pid, prompt_ids, completion_ids, reward in zip(
            samples["prompt_id"], samples["prompt_ids"], samples["completion_ids"],
            verdicts["reward"], strict=True):
        if pid in chosen:
            out[pid].append({"prompt_ids": prompt_ids, "completion_ids": completion_ids,
                             "reward": reward})
    return dict(out)


def _gvm(cfg: PipelineConfig, layout: Layout, it: IterationLayout,
         chosen: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    import numpy as np
    import torch

    from cotflow.algorithms.gvm import allocate
    from cotflow.recipes.base import Example
    from cotflow.verify.rewards import is_correct
    from cotflow.verify.scoring import grade_rewards
    from models.drawing import draw
    from models.grad_norms import sample_grad_norms
    from models.policy import context_length, load_policy
    from tasks.common import problems_by_id

    g = cfg.allocate.gvm
    problems = problems_by_id(layout.train_set)
    probe = _reused_probe(it, set(chosen)) if g.probe == "reuse" else {}
    fresh = [pid for pid in chosen if pid not in probe]
    rows, tokens_per_s = draw(cfg, problems, it.prev_policy, [(pid, g.probe_n) for pid in fresh],
                              seed=probe_seed(cfg, it.key), where=layout.train_set)
    _, rewards, _ = grade_rewards(cfg.verify, [problems[r["prompt_id"]]["answer"] for r in rows],
                                  [r["completion"] for r in rows])
    for row, reward in zip(rows, rewards, strict=True):
        probe.setdefault(row["prompt_id"], []).append({**row, "reward": reward})

    # Accepted as train accepts: a correct sample.
    accepted = [(pid, s) for pid in chosen for s in probe[pid] if is_correct(s["reward"])]
    torch.set_num_threads(cfg.threads)
    model, tokenizer = load_policy(it.prev_policy)
    # The norm of the log-likelihood of the sampled tokens, as train would train them.
    norms = sample_grad_norms(
        model, tokenizer.pad_token_id,
        [Example(tuple(s["prompt_ids"]), tuple(s["completion_ids"])) for _, s in accepted],
        param_names=g.grad_params, batch_size=g.grad_batch_size,
        max_len=context_length(model, cfg))
    per_prompt: dict[str, list[float]] = defaultdict(list)
    for (pid, _), norm in zip(accepted, norms, strict=True):
        per_prompt[pid].append(norm)
    probed = np.array([len(probe[pid]) for pid in chosen])
    hits = np.array([len(per_prompt[pid]) for pid in chosen])
    p = hits / probed
    G = np.array([float(np.mean(per_prompt[pid])) if per_prompt[pid] else 0.0 for pid in chosen])
    budget = cfg.allocate.budget
    n, ratios = allocate(p, G, budget, alpha=g.alpha, beta=g.beta,
                         filter_threshold=g.filter_threshold,
                         filter_insufficient=g.filter_insufficient, floor=g.floor, cap=g.cap)
    reused = [pid not in fresh for pid in chosen]
    write_table(it.budget, "budget", {
        "prompt_id": chosen, "probe_samples": probed.tolist(), "probe_reused": reused,
        "accepted": hits.tolist(), "p": p.tolist(), "G": G.tolist(),
        "ratio": ratios.tolist(), "n": n.tolist()})
    write_table(it.allocation, "allocation", {"prompt_id": chosen, "n": n.tolist()})
    if ratios.sum() == 0:
        log.warning("no prompt has p_i > 0 and G_i > 0 after filters: budget split equally")
    stats = {
        "method": "gvm", "prompts": len(chosen), "samples": int(n.sum()),
        "probe_samples": len(rows), "probe_reused_samples": int(probed.sum()) - len(rows),
        "probe_reused_prompts": sum(reused), "zero_share": round(float((n == 0).mean()), 6),
        "mean_p": round(float(p.mean()), 6), "mean_G": round(float(G.mean()), 6),
        "max_n": int(n.max()), "uniform_fallback": bool(ratios.sum() == 0),
    }
    return stats, {"allocate/probe_tokens_per_s": round(tokens_per_s, 1)}

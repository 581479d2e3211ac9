"""spo: SPO-chain (Guo et al., arXiv 2505.23564; specs/algorithms-b.md §2.3).

The sample stage has drawn, per response, its token probabilities at the sampling
temperature, its segment boundaries (every m-th token with p < ρ) and the Monte Carlo value
of the state before each boundary (models/mc_values.py, `sample.segments`). This recipe:
1. reward R(y): 1 correct and finished, 0 wrong or cut off, −2 for more than one answer
   marker (the paper's reward);
2. per-token advantages: each segment gets V(its end) − V(its start), the last one
   R(y) − V; tokens before the first boundary get 0; then tokens of p > ρ get 0 (the
   probability mask on advantages);
3. objective: advantages whitened over the micro-batch's masked tokens (the paper: per
   mini-batch; equal when micro_batch_size = mini_batch_size, as the preset sets), PPO
   clip under the mask M = response ∧ p < ρ with the log-ratio clamp, + kl_coef · k3 KL
   to the reference summed per sequence under M; a micro-batch whose mean ratio exceeds 10
   trains nothing.
Every response is an example; one with no cutpoint carries only its KL term.
"""

from __future__ import annotations

from typing import Literal

from cotflow.config_types import ClipEps, NonNegFloat, Section
from cotflow.recipes.base import Example, Inputs, Recipe, TrainingPlan


class Settings(Section):
    kind: Literal["spo"]
    clip_eps: ClipEps
    kl_coef: NonNegFloat
    reference: Literal["prev", "base"]  # the paper: the initial checkpoint (base)
    whiten: bool  # masked whitening of the advantages (the paper: on)


def objective(s: Settings, rho: float):
    from cotflow.algorithms.spo import masked_whiten, spo_loss
    from cotflow.recipes.terms import metrics, need

    def spo_objective(tb):
        # The sampling-time probabilities where the plan has them (SPO-chain's cutpoints);
        # else the stage-start policy's (SPO-tree's edges, which may be replayed).
        probs = tb.extras.get("sample_probs")
        if probs is None:
            probs = need(tb.old_logprobs, "old").exp()
        pmask = tb.mask.bool() & (probs < rho)
        adv = tb.extras["spo_advantages"]
        if s.whiten and int(pmask.sum()) >= 2:
            adv = masked_whiten(adv, pmask)
        old = need(tb.old_logprobs, "old")
        ref = tb.ref_logprobs if tb.ref_logprobs is not None else old
        out = spo_loss(tb.logprobs, old, ref, adv, tb.mask, rho=rho, eps=s.clip_eps,
                       kl_coef=s.kl_coef, sequences=tb.step.sequences, sample_probs=probs)
        # pg is this micro-batch's token-mean: weighted by its share of the step's
        # sequences; the KL term is already a share (summed / the step's sequences).
        share = tb.mask.shape[0] / max(float(tb.step.sequences), 1.0)
        loss = (out.pg * share + out.kl) * (0.0 if out.skipped else 1.0)  # the paper's L·0
        return loss, {"mean_ratio": out.mean_ratio, "skipped": float(out.skipped),
                      **metrics(tb)}
    return spo_objective


def plan(s: Settings, inputs: Inputs) -> TrainingPlan:
    from cotflow.algorithms.spo import answer_markers, chain_advantages, spo_reward

    seg = inputs.segments
    if seg is None:
        raise ValueError("spo needs sample.segments (the MC values' settings)")
    table = inputs.tables.get("values", {})
    at = {(pid, idx): i for i, (pid, idx) in enumerate(
        zip(table.get("prompt_id", []), table.get("sample_idx", []), strict=True))}
    examples, low, tokens, segments = [], 0, 0, 0
    for r in inputs.rollouts:
        i = at.get((r.prompt_id, r.sample_idx))
        if i is None:
            raise ValueError(f"values.parquet has no MC values for sample {r.prompt_id!r} "
                             f"#{r.sample_idx}: rerun the sample stage of this iteration")
        probs, bounds = table["probs"][i], table["boundaries"][i]
        reward = spo_reward(r.correct, r.finished, answer_markers(r.completion))
        _, masked = chain_advantages(probs, dict(zip(bounds, table["values"][i], strict=True)),
                                     reward, m=seg.interval, rho=seg.rho)
        examples.append(Example(r.prompt_ids, r.completion_ids, 0.0,
                                {"spo_advantages": masked, "sample_probs": probs}))
        low += sum(p < seg.rho for p in probs)
        tokens += len(probs)
        segments += len(bounds)
    n = max(len(examples), 1)
    stats = {"segments_per_response": round(segments / n, 4),
             "masked_token_share": round(1 - low / max(tokens, 1), 6),
             "no_cutpoint_share": round(sum(not b for b in table.get("boundaries", []))
                                        / n, 6)}
    return TrainingPlan(examples, objective(s, seg.rho), old=True,
                        reference=s.reference if s.kl_coef else None, stats=stats)


RECIPE = Recipe("spo", Settings, plan, reads=("values",))

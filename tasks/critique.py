"""critique: a critique of every sampled response and the policy's refinement of it
(Critique-GRPO, specs/algorithms-a.md §3.2-3.3); other algorithms use none, and the stage
writes an empty, valid critiques.parquet at once.

For an iteration whose algorithm entry names a `critique` type:
1. Critique each response (cotflow/critiques.py): `indicative`, `indicative_gt`, `cot` (on
   the built-in task its own step critic; else the LM critic of `critique.critic`) or `self`
   (the policy, prompted with `critique.self_template`). Correct responses get the positive
   indicative sentence; an LM critique without the closing marker falls back to
   `indicative_gt` (as the paper's code does after its retries).
2. Refine: the policy answers `critique.refinement_template` (question, the response, its
   critique) once per response, with the sample stage's backend and settings; this prompt
   and the self-critique one are user messages (models/prompts.py: the chat template where
   data.chat_template says). A prompt that does not fit the policy's context is refused,
   naming it.
3. Grade the refinements with the verify stage's reward (cotflow/verify/scoring.py) and
   select one per prompt: the first correct, else the first (§3.3). The train stage joins
   it to the prompt's group.

Output: critiques.parquet (records.SCHEMAS "critiques"): per response its critique, who
wrote it, the refinement prompt and the refinement with their token ids, `finished`, the
refinement's verdict, reward and extracted answer, and whether it was selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.critiques import fill
from cotflow.layout import IterationLayout, Layout
from cotflow.records import write_table

# Refinements and self-critiques draw from seeds of their own, apart from the sample
# stage's (iteration seed) and its refill rounds' (+100 000 per round).
REFINE_SEED = 500_000
CRITIC_SEED = 600_000


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from cotflow.critiques import indicative_gt
    from cotflow.records import read_table
    from cotflow.rollouts import rollouts
    from tasks.common import iteration_seed, problems_by_id

    kind = getattr(cfg.algorithm(it.key), "critique", None)
    if kind is None:
        write_table(it.critiques, "critiques", [])
        return {"critiques": 0}, {}
    rows = rollouts(read_table(it.samples, "samples"), read_table(it.verdicts, "verdicts"))
    problems = problems_by_id(layout.train_set)
    seed = iteration_seed(cfg, it.key)
    self_draws = 0
    wording = cfg.critique.wording
    golds = [problems[r.prompt_id]["answer"] for r in rows]
    texts, critics = _indicative(rows, golds, kind, wording)
    if kind == "cot":
        _cot(cfg, rows, problems, texts, critics, seed=seed + CRITIC_SEED)

    from models.critic import check_prompt_room, critique_rounds
    from models.prompts import policy_prompts
    from models.sampler import make_sampler

    s = cfg.sample
    # The policy's prompts are user messages: in its chat template where data asks for it.
    fmt = policy_prompts(cfg.data, it.prev_policy)
    with make_sampler(s.backend, it.prev_policy, batch_size=s.batch_size, threads=cfg.threads,
                      serving=cfg.serving, seed=seed) as sampler:
        if kind == "self":
            todo = [i for i, t in enumerate(texts) if t is None]
            prompts = [fmt.render(fill(cfg.critique.self_template, "critique.self_template",
                                       question=problems[rows[i].prompt_id]["question"],
                                       previous=rows[i].completion)) for i in todo]
            inputs = fmt.for_sampler(prompts)
            check_prompt_room(it.prev_policy, inputs, [_name(rows[i]) for i in todo],
                              new_tokens=s.max_new_tokens, what="the self-critique prompt")
            found, self_draws = critique_rounds(
                sampler, inputs, retries=cfg.critique.critic.retries,
                max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                seed=seed + CRITIC_SEED)
            _place(texts, critics, todo, found, "policy")
        # Whatever no critic could write: the indicative critique with the ground truth.
        for i, t in enumerate(texts):
            if t is None:
                texts[i] = indicative_gt(False, golds[i], wording)
                critics[i] = "fallback"
        critiques = [t for t in texts if t is not None]
        prompts = [fmt.render(fill(cfg.critique.refinement_template,
                                   "critique.refinement_template",
                                   question=problems[r.prompt_id]["question"],
                                   previous=r.completion, critique=c))
                   for r, c in zip(rows, critiques, strict=True)]
        inputs = fmt.for_sampler(prompts)
        lengths = check_prompt_room(it.prev_policy, inputs, [_name(r) for r in rows],
                                    new_tokens=s.max_new_tokens, what="the refinement prompt")
        refined = sampler.generate(inputs, max_new_tokens=s.max_new_tokens,
                                   temperature=s.temperature, top_p=s.top_p,
                                   seed=seed + REFINE_SEED)
    from cotflow.verify.scoring import grade_rewards

    grades, rewards, _ = grade_rewards(cfg.verify, golds, [c.text for c in refined])
    selected = _selected(rows, rewards)
    write_table(it.critiques, "critiques", {
        "prompt_id": [r.prompt_id for r in rows], "sample_idx": [r.sample_idx for r in rows],
        "critique_type": [kind] * len(rows), "critic": critics, "critique": critiques,
        "refinement_prompt": prompts, "refinement": [c.text for c in refined],
        "refinement_prompt_ids": [c.prompt_ids for c in refined],
        "refinement_ids": [c.token_ids for c in refined],
        "num_tokens": [c.num_tokens for c in refined],
        "finished": [c.finished for c in refined], "verdict": [g.verdict for g in grades],
        "reward": rewards, "extracted": [g.extracted for g in grades], "selected": selected,
    })
    # What the policy drew here (refinements, self-critiques): the sample budget counts it.
    stats = {"critiques": len(rows), "critique_type": kind,
             "policy_samples": len(rows) + self_draws,
             **refinement_stats(rows, critiques, critics, rewards, selected),
             "max_refinement_prompt_tokens": max(lengths, default=0),
             "mean_refinement_prompt_tokens": round(sum(lengths) / max(len(lengths), 1), 4)}
    return stats, {"critique/tokens_per_s": round(sampler.tokens_per_s, 1)}


def _indicative(rows, golds: Sequence[str], kind: str,
                wording: str) -> tuple[list[str | None], list[str]]:
    """The critiques that need no critic (all of them for the indicative types, those of
    correct responses for the others), None where a critic is to write; and who wrote each."""
    from cotflow.critiques import indicative, indicative_gt

    texts: list[str | None] = []
    critics: list[str] = []
    for r, gold in zip(rows, golds, strict=True):
        if r.correct or kind in ("indicative", "indicative_gt"):
            texts.append(indicative(r.correct, wording) if kind == "indicative"
                         else indicative_gt(r.correct, gold, wording))
            critics.append("indicative")
        else:
            texts.append(None)
            critics.append("")
    return texts, critics


def _name(r) -> str:
    return f"sample ({r.prompt_id!r}, {r.sample_idx})"


def _place(texts: list[str | None], critics: list[str], where: Sequence[int],
           found: Sequence[str | None], critic: str) -> None:
    for i, t in zip(where, found, strict=True):
        if t is not None:
            texts[i], critics[i] = t, critic


def _cot(cfg: PipelineConfig, rows, problems: dict[str, dict[str, Any]],
         texts: list[str | None], critics: list[str], *, seed: int) -> None:
    """Step-by-step critiques of the incorrect responses: the built-in task's own critic,
    else the LM critic (critique.critic)."""
    todo = [i for i, t in enumerate(texts) if t is None]
    if cfg.data.source == "builtin":
        from cotflow.data.arithmetic_critic import step_critique

        for i in todo:
            p = problems[rows[i].prompt_id]
            texts[i] = step_critique(rows[i].completion, p["solution"], p["answer"])
            critics[i] = "builtin"
        return
    from models.critic import lm_critiques

    prompts = [fill(cfg.critique.critic.template, "critique.critic.template",
                     question=problems[rows[i].prompt_id]["question"],
                     previous=rows[i].completion,
                     reference=problems[rows[i].prompt_id]["solution"]
                     or problems[rows[i].prompt_id]["answer"]) for i in todo]
    _place(texts, critics, todo, lm_critiques(cfg, prompts, seed=seed), "lm")


def _selected(rows, rewards: Sequence[float]) -> list[bool]:
    """Per row, whether its refinement is its prompt's selected one (§3.3)."""
    from cotflow.algorithms.advantages import group_indices
    from cotflow.algorithms.critique import select_refinement
    from cotflow.verify.rewards import is_correct

    out = [False] * len(rows)
    for idx in group_indices([r.prompt_id for r in rows]).values():
        ordered = sorted(idx, key=lambda i: rows[i].sample_idx)
        out[ordered[select_refinement([is_correct(rewards[i]) for i in ordered])]] = True
    return out


def refinement_stats(rows, critiques: Sequence[str], critics: Sequence[str],
                     rewards: Sequence[float], selected: Sequence[bool]) -> dict[str, float]:
    """What refinements buy: their success on incorrect responses against a fresh sample's
    (the other responses of the same prompt: plain pass@1 there), and the share of
    all-wrong prompts whose selected refinement is correct (the groups it rescues)."""
    from cotflow.algorithms.advantages import group_indices
    from cotflow.verify.rewards import is_correct

    wrong = [i for i, r in enumerate(rows) if not r.correct]
    by_prompt = group_indices([r.prompt_id for r in rows])
    fresh = []
    for i in wrong:
        others = [j for j in by_prompt[rows[i].prompt_id] if j != i]
        if others:
            fresh.append(sum(rows[j].correct for j in others) / len(others))
    all_wrong = [idx for idx in by_prompt.values() if not any(rows[i].correct for i in idx)]
    rescued = sum(any(selected[i] and is_correct(rewards[i]) for i in idx) for idx in all_wrong)
    n = max(len(rows), 1)
    return {
        "refinement_success_rate": round(
            sum(is_correct(rewards[i]) for i in wrong) / max(len(wrong), 1), 6),
        "fresh_pass_rate_on_failed": round(sum(fresh) / max(len(fresh), 1), 6),
        "refinement_accuracy": round(sum(is_correct(x) for x in rewards) / n, 6),
        "all_wrong_prompts": len(all_wrong),
        "rescued_share": round(rescued / max(len(all_wrong), 1), 6),
        "mean_critique_chars": round(sum(len(c) for c in critiques) / n, 4),
        "fallback_share": round(critics.count("fallback") / n, 6),
    }

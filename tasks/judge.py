"""judge: preference pairs, by the iteration's recipe (cotflow/recipes), from verified
rollouts. A recipe with a `judge` (dpo: a correct rollout chosen over an incorrect one of
the same prompt) returns (chosen, rejected) pairs; a recipe with a `verifier` (veripo)
flags every rollout (flags.parquet) and builds its own pairs, from the previous
iteration's rollouts when it reuses them; for the others the stage writes empty, valid
judgements.parquet and flags.parquet at once.
"""

from __future__ import annotations

from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import IterationLayout, Layout
from cotflow.recipes import recipe_for
from cotflow.records import read_table, write_table


def run(cfg: PipelineConfig, layout: Layout,
        it: IterationLayout) -> tuple[dict[str, Any], dict[str, Any]]:
    from cotflow.rollouts import rollouts
    from tasks.common import iteration_seed

    algo = cfg.algorithm(it.key)
    recipe = recipe_for(algo.kind)
    if recipe.verifier is not None:
        return _verify(cfg, layout, it, recipe), {}
    write_table(it.flags, "flags", [])
    judge = recipe.judge
    if judge is None:
        write_table(it.judgements, "judgements", [])
        return {"pairs": 0}, {}
    rows = rollouts(read_table(it.samples, "samples"), read_table(it.verdicts, "verdicts"))
    pairs = judge(algo, rows, iteration_seed(cfg, it.key))
    write_table(it.judgements, "judgements", [{
        "prompt_id": rows[c].prompt_id, "chosen_idx": rows[c].sample_idx,
        "rejected_idx": rows[r].sample_idx, "score": rows[c].reward - rows[r].reward,
        "kind": "accuracy", "prompt_ids": list(rows[c].prompt_ids),
        "chosen_ids": list(rows[c].completion_ids), "rejected_ids": list(rows[r].completion_ids),
    } for c, r in pairs])
    return {"pairs": len(pairs), "prompts_paired": len({rows[c].prompt_id for c, _ in pairs})}, {}


def _verify(cfg: PipelineConfig, layout: Layout, it: IterationLayout, recipe) -> dict[str, Any]:
    """The rollout-aware verifier over this iteration's rollouts or the previous one's."""
    from transformers import AutoConfig, AutoTokenizer

    from cotflow.data.arithmetic import answer_follows
    from cotflow.recipes.base import VerifierInputs
    from cotflow.rollouts import Rollout, rollouts
    from tasks.common import iteration_seed, problems_by_id

    algo = cfg.algorithm(it.key)
    prev = recipe.reuses_prev_rollouts(algo)
    samples, verdicts = (it.prev_samples, it.prev_verdicts) if prev else (it.samples,
                                                                          it.verdicts)
    rows = rollouts(read_table(samples, "samples"), read_table(verdicts, "verdicts"))
    problems = problems_by_id(layout.train_set)
    # The policy's tokenizer encodes the reflection composites; its context bounds pairs.
    tokenizer = AutoTokenizer.from_pretrained(it.prev_policy)
    context = (getattr(AutoConfig.from_pretrained(it.prev_policy), "max_position_embeddings",
                       None) or cfg.model.max_position_embeddings)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    lm = getattr(algo, "judge", None)
    judged: dict[tuple[str, int], bool | None] = {}
    if lm is not None and lm.model:
        from models.judge_lm import judge_consistency

        verdicts = judge_consistency(cfg, lm.model, lm.template, lm.max_new_tokens, [
            (problems[r.prompt_id]["question"], r.completion, r.extracted) for r in rows])
        judged = {(r.prompt_id, r.sample_idx): v for r, v in zip(rows, verdicts, strict=True)}

    def consistent(r: Rollout) -> bool | None:
        # The LM judge where one is set; else exact on the built-in task, which knows its
        # steps; else "unknown", counted and never paired.
        if judged:
            return judged[(r.prompt_id, r.sample_idx)]
        solution = problems[r.prompt_id]["solution"]
        if cfg.data.source != "builtin" or not solution:
            return None
        return answer_follows(r.completion, solution, r.extracted)

    result = recipe.verifier(algo, VerifierInputs(
        rollouts=rows, consistent=consistent, encode=encode, max_len=int(context),
        seed=iteration_seed(cfg, it.key)))
    write_table(it.flags, "flags", result.flags)
    write_table(it.judgements, "judgements", result.pairs)
    return {"rollouts_from": "prev" if prev else "own", **result.stats}

"""Verified rollouts: the samples table joined with its verdicts, as the recipes see them.

Pure (standard library only). A rollout keeps the token ids it was sampled as, so training
sees exactly the sampled tokens: `completion_ids` ends with EOS only when the model produced
it (`finished`). Groups are the rollouts of one prompt (`prompt_id`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cotflow.verify.rewards import is_correct


@dataclass(frozen=True)
class Rollout:
    prompt_id: str
    sample_idx: int
    prompt: str
    completion: str  # text, for people and for answer extraction
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]  # as sampled; EOS last iff finished
    finished: bool
    reward: float  # the verify stage's reward
    extracted: str | None
    # A Critique-GRPO refinement joined to its prompt's group: drawn from the refinement
    # prompt, trained as a reply to `prompt` (off-policy); sample_idx is the response it refined.
    refinement: bool = False

    @property
    def correct(self) -> bool:
        return is_correct(self.reward)

    @property
    def num_tokens(self) -> int:
        return len(self.completion_ids)


def rollouts(samples: dict[str, list], verdicts: dict[str, list]) -> list[Rollout]:
    """Samples joined with their verdicts, in sample order."""
    keys = list(zip(samples["prompt_id"], samples["sample_idx"], strict=True))
    if keys != list(zip(verdicts["prompt_id"], verdicts["sample_idx"], strict=True)):
        raise ValueError("verdicts do not line up with samples (rerun verify)")
    return [Rollout(pid, idx, prompt, text, tuple(p_ids), tuple(c_ids), finished, reward, ext)
            for pid, idx, prompt, text, p_ids, c_ids, finished, reward, ext in zip(
                samples["prompt_id"], samples["sample_idx"], samples["prompt"],
                samples["completion"], samples["prompt_ids"], samples["completion_ids"],
                samples["finished"], verdicts["reward"], verdicts["extracted"], strict=True)]


def selected_refinements(critiques: dict[str, list], rows: Sequence[Rollout]) -> list[Rollout]:
    """The critique stage's selected refinement of each prompt, as a rollout of the prompt's
    group: the question's prompt and prompt ids (it trains as a reply to the question), the
    refinement's sampled ids, its reward (specs/algorithms-a.md §3.3)."""
    where = {(r.prompt_id, r.sample_idx): r for r in rows}
    out = []
    for i, pid in enumerate(critiques["prompt_id"]):
        if not critiques["selected"][i]:
            continue
        initial = where.get((pid, critiques["sample_idx"][i]))
        if initial is None:
            raise ValueError(f"critiques name sample ({pid!r}, {critiques['sample_idx'][i]}) "
                             "that is not in samples (rerun critique)")
        out.append(Rollout(pid, initial.sample_idx, initial.prompt, critiques["refinement"][i],
                           initial.prompt_ids, tuple(critiques["refinement_ids"][i]),
                           critiques["finished"][i], critiques["reward"][i],
                           critiques["extracted"][i], refinement=True))
    return out


def groups(rows: Sequence[Rollout]) -> dict[str, list[Rollout]]:
    """Rollouts by prompt, prompts in order of first appearance."""
    out: dict[str, list[Rollout]] = defaultdict(list)
    for r in rows:
        out[r.prompt_id].append(r)
    return dict(out)


def mixed_prompts(rows: Sequence[Rollout]) -> set[str]:
    """Prompts with some correct and some incorrect rollouts: DAPO's dynamic-sampling
    filter (`filter_groups` on accuracy, specs/algorithms-b.md §1.4), and NFT's."""
    return {pid for pid, group in groups(rows).items()
            if 0 < sum(r.correct for r in group) < len(group)}


def zero_variance_share_of(rows: Sequence[Rollout]) -> float:
    """Share of prompts whose rollouts are all correct or all incorrect."""
    by_prompt = groups(rows)
    if not by_prompt:
        return 0.0
    return 1.0 - len(mixed_prompts(rows)) / len(by_prompt)


def answer_pairs(rows: Sequence[Rollout]) -> list[tuple[str, str]]:
    """The distinct pairs of different extracted answers within each prompt's group: what
    the verifier must compare for semantic clustering."""
    by_prompt: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.extracted is not None:
            by_prompt[r.prompt_id].add(r.extracted)
    pairs: set[tuple[str, str]] = set()
    for answers in by_prompt.values():
        ordered = sorted(answers)
        pairs.update((a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:])
    return sorted(pairs)


def equivalence_from(verdicts: dict[tuple[str, str], bool]) -> Callable[[str, str], bool]:
    """An equivalence test over precomputed verifier verdicts of answer pairs."""
    def equivalent(a: str, b: str) -> bool:
        return a == b or verdicts.get((a, b), False) or verdicts.get((b, a), False)
    return equivalent


def pairs_of(judgements: dict[str, list],
             rows: Sequence[Rollout]) -> list[tuple[Rollout, Rollout]]:
    """The judge stage's (chosen, rejected) pairs as rollouts."""
    where = {(r.prompt_id, r.sample_idx): r for r in rows}
    out = []
    for pid, c, r in zip(judgements["prompt_id"], judgements["chosen_idx"],
                         judgements["rejected_idx"], strict=True):
        if (pid, c) not in where or (pid, r) not in where:
            raise ValueError(f"judgements name sample ({pid!r}, {c}/{r}) that is not in "
                             "samples (rerun judge)")
        out.append((where[(pid, c)], where[(pid, r)]))
    return out

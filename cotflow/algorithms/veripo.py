"""VerIPO's rollout-aware verifier and contrastive pairs (pure; standard library only).

Li et al., "VerIPO: Cultivating Long Reasoning in Video-LLMs via Verifier-Guided Iterative
Policy Optimization", arXiv 2505.19000; specs/algorithms-b.md §4.4-4.5 (the training code is
unreleased, so the thresholds and the pair rule are the spec's reconstruction [D]).

Per rollout the verifier records `correct`, `consistent` (None: the judge could not say),
`repetitive`, `length` and whether it `finished`. Each rollout of a prompt then falls in one
category, in this order:
    penalty       repetitive, or its length is outside [min_length, max_length], or it
                  ran out of budget without finishing
    wrong         incorrect
    inconsistent  correct, but the answer does not follow from the reasoning
    unknown       correct, consistency unknown (counted, never guessed into a pair)
    good          correct and consistent
and pairs use the longest good rollout as chosen (VerIPO's aim is longer consistent CoT):
    penalty (chosen*, a penalty rollout), consistency (chosen*, an inconsistent one),
    accuracy (chosen*, a wrong one), reflection (composite: wrong reasoning, a
    self-correction phrase, the good rollout; rejected: that wrong rollout).
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

PAIR_TYPES = ("penalty", "consistency", "accuracy", "reflection")
CATEGORIES = ("good", "penalty", "wrong", "inconsistent", "unknown")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
_VERDICT = re.compile(r"\b(inconsistent|consistent)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Flags:
    """The verifier's view of one rollout (§4.4)."""

    correct: bool
    consistent: bool | None  # None: unknown (an LM judge's reply without a keyword)
    repetitive: bool
    length: int  # completion tokens
    finished: bool = True  # False: cut at the sampling budget


@dataclass(frozen=True)
class Pair:
    """One preference pair, as positions in the prompt's rollouts. A reflection pair's
    chosen is the composite of `wrong`'s reasoning and `chosen`; its rejected is `wrong`."""

    kind: str
    chosen: int
    rejected: int
    wrong: int | None = None


def repetitive(tokens: Sequence[Hashable], text: str, *, ngram: int, max_count: int) -> bool:
    """The spec's repetition rule [D]: any `ngram`-token span occurs `max_count` or more
    times (overlapping occurrences count), or any sentence (a line, or text ending in
    . ! ?) occurs `max_count` or more times. Defaults in params.yaml: 20 and 3."""
    if ngram < 1 or max_count < 2:
        raise ValueError(f"ngram={ngram} must be >= 1 and max_count={max_count} >= 2")
    spans = Counter(tuple(tokens[i:i + ngram]) for i in range(len(tokens) - ngram + 1))
    if spans and max(spans.values()) >= max_count:
        return True
    sentences = Counter(s.strip() for s in _SENTENCE_END.split(text) if s.strip())
    return bool(sentences) and max(sentences.values()) >= max_count


def parse_consistency(reply: str) -> bool | None:
    """An LM judge's reply by its first keyword (§4.4 [D]): "Consistent" -> True,
    "Inconsistent" -> False, neither -> None (unknown: counted, never guessed)."""
    match = _VERDICT.search(reply)
    return None if match is None else match.group(1).lower() == "consistent"


def category(f: Flags, *, min_length: int | None, max_length: int | None) -> str:
    """The rollout's category (module docstring), one of CATEGORIES."""
    outside = ((min_length is not None and f.length < min_length)
               or (max_length is not None and f.length > max_length))
    if f.repetitive or outside or not f.finished:
        return "penalty"
    if not f.correct:
        return "wrong"
    if f.consistent is None:
        return "unknown"
    return "good" if f.consistent else "inconsistent"


def prompt_pairs(flags: Sequence[Flags], *, types: Sequence[str], max_pairs: int,
                 min_length: int | None, max_length: int | None,
                 rng: random.Random | None) -> list[Pair]:
    """Pairs of one prompt's rollouts (§4.5): one per type in `types` order while the
    prompt has a rollout of the type's category, at most `max_pairs`; none when no rollout
    is good. chosen* is the longest good rollout (the first of equals). The rejected of each
    type is drawn by `rng` (None: the first) among rollouts no earlier pair used, else
    among all of its category — so accuracy and reflection pairs differ where they can."""
    unknown = sorted(set(types) - set(PAIR_TYPES))
    if unknown or not types:
        raise ValueError(f"pair types {list(types)}: unknown {unknown} (have {PAIR_TYPES})")
    if max_pairs < 1:
        raise ValueError(f"max_pairs={max_pairs} must be >= 1")
    cats = [category(f, min_length=min_length, max_length=max_length) for f in flags]
    good = [i for i, c in enumerate(cats) if c == "good"]
    if not good:
        return []
    best = max(good, key=lambda i: (flags[i].length, -i))
    source = {"penalty": "penalty", "consistency": "inconsistent", "accuracy": "wrong",
              "reflection": "wrong"}
    used: set[int] = set()
    pairs: list[Pair] = []
    for kind in types:
        if len(pairs) == max_pairs:
            break
        pool = [i for i, c in enumerate(cats) if c == source[kind]]
        if not pool:
            continue
        fresh = [i for i in pool if i not in used] or pool
        bad = fresh[0] if rng is None else rng.choice(fresh)
        used.add(bad)
        pairs.append(Pair(kind, best, bad, bad if kind == "reflection" else None))
    return pairs


def split_reasoning(text: str) -> tuple[str, str, str]:
    """(before, reasoning, after) of a completion: `<think>` tags where present (VerIPO's
    format), else the lines before the last non-empty line (the answer line, as the
    built-in task and `#### N` / `\\boxed{}` answers end)."""
    if "</think>" in text:
        head, _, tail = text.partition("</think>")
        before, tag, reasoning = head.rpartition("<think>")
        return before + tag, reasoning.strip(), "</think>" + tail
    lines = text.rstrip("\n").split("\n")
    return "", "\n".join(lines[:-1]).strip(), lines[-1]


def reflection_text(wrong: str, good: str, phrase: str) -> str:
    """VerIPO's composite chosen (§4.5): the wrong rollout's reasoning, the self-correction
    `phrase`, then the good rollout's reasoning and answer — within one <think> block when
    the good rollout has one, else line by line."""
    if not phrase.strip():
        raise ValueError("the reflection phrase is empty")
    _, wrong_reasoning, _ = split_reasoning(wrong)
    before, good_reasoning, after = split_reasoning(good)
    sep = " " if "</think>" in good else "\n"
    body = sep.join(p for p in (wrong_reasoning, phrase.strip(), good_reasoning) if p)
    return f"{before} {body} {after}".lstrip() if "</think>" in good else f"{body}\n{after}"


def always_solved_to_drop(accuracy: Mapping[str, float], *, share: float,
                          seed: int) -> set[str]:
    """Between loops VerIPO discards 80 % of the "simple" prompts, those whose average
    rollout accuracy in the previous GRPO pass was 1 (§4.2): floor(share · count) of them,
    drawn by a seeded RNG over the prompts in sorted order."""
    if not 0 <= share <= 1:
        raise ValueError(f"share={share} must be in [0, 1]")
    simple = sorted(pid for pid, acc in accuracy.items() if acc >= 1.0)
    return set(random.Random(seed).sample(simple, math.floor(share * len(simple) + 1e-9)))


def rates(flags: Sequence[Flags]) -> dict[str, float]:
    """Per-iteration verifier metrics: accuracy, inconsistency rate (correct but
    inconsistent, as a share of the correct), the share of correct rollouts whose
    consistency is unknown, repetition rate and mean length in tokens."""
    n = len(flags)
    correct = [f for f in flags if f.correct]
    return {
        "accuracy": len(correct) / n if n else 0.0,
        "inconsistency_rate": (sum(f.consistent is False for f in correct) / len(correct)
                               if correct else 0.0),
        "unknown_consistency_rate": (sum(f.consistent is None for f in correct) / len(correct)
                                     if correct else 0.0),
        "repetition_rate": sum(f.repetitive for f in flags) / n if n else 0.0,
        "mean_length": sum(f.length for f in flags) / n if n else 0.0,
    }

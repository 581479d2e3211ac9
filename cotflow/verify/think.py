"""TON's completion format: `<think>…</think><answer>…</answer>` (specs/algorithms-b.md §3.2).

Think or Not? (arXiv 2505.16854, `kokolerk/TON`): the thought may be empty, written exactly
`<think>\\n\\n</think>`. Pure string functions; each is one linear scan, so a hostile
completion (megabytes, thousands of tags) cannot make them quadratic.
"""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
EMPTY_THOUGHT = "<think>\n\n</think>"
# The paper's format reward: a full match of this pattern (DOTALL). `format_ok` decides the
# same without the regex engine, whose backtracking on it is quadratic in the worst case.
FORMAT_PATTERN = r"<think>.*?</think>\s*<answer>.*?</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def think_answer(thought: str, answer: str) -> str:
    """The target text: a thought (the working; "" for the empty thought) and the answer.

    The thought sits on its own lines, so that the empty one is exactly EMPTY_THOUGHT and
    every working line stays a whole line (the verifier's step check reads lines)."""
    return f"{THINK_OPEN}\n{thought}\n{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def format_ok(text: str) -> bool:
    """Whether `text` fully matches FORMAT_PATTERN under DOTALL (TON's format reward).

    The lazy `.*?` may hold anything, tags included, so the match exists iff the text
    starts with <think>, ends with </answer>, and some </think> after the opening tag is
    followed by whitespace and an <answer> that ends before the closing tag starts."""
    if not (text.startswith(THINK_OPEN) and text.endswith(ANSWER_CLOSE)):
        return False
    last = len(text) - len(ANSWER_CLOSE)  # where </answer> starts
    i = text.find(THINK_CLOSE, len(THINK_OPEN))
    while i != -1:
        j = i + len(THINK_CLOSE)
        while j < len(text) and text[j].isspace():  # `\s` is str.isspace in `re`
            j += 1
        if text.startswith(ANSWER_OPEN, j):
            # Later </think>s only start later <answer>s: the first that fits decides.
            return j + len(ANSWER_OPEN) <= last
        # No </think> starts inside the whitespace run just skipped, so none is rescanned.
        i = text.find(THINK_CLOSE, max(j, i + 1))
    return False


def answer_of(text: str) -> str | None:
    """The stripped content of the first <answer>…</answer> (as the paper's `re.search`),
    or None when there is none or it is never closed (a truncated answer is not graded)."""
    return answer_tag(text, last=False)


def answer_tag(text: str, *, last: bool) -> str | None:
    """The stripped content of the first (or `last`) opened <answer> up to the </answer>
    after it; None when there is no such tag or it is never closed."""
    start = text.rfind(ANSWER_OPEN) if last else text.find(ANSWER_OPEN)
    if start == -1:
        return None
    start += len(ANSWER_OPEN)
    end = text.find(ANSWER_CLOSE, start)
    return None if end == -1 else text[start:end].strip()


def thought_of(text: str) -> str | None:
    """The content between the first <think> and the </think> after it, or None."""
    start = text.find(THINK_OPEN)
    if start == -1:
        return None
    start += len(THINK_OPEN)
    end = text.find(THINK_CLOSE, start)
    return None if end == -1 else text[start:end]


def skipped(text: str) -> bool:
    """Whether the completion skips thinking: its thought is empty after stripping
    whitespace (§3.5). A completion without a closed thought does not count as skipping."""
    thought = thought_of(text)
    return thought is not None and not thought.strip()


def without_tags(text: str) -> str:
    """`text` with each format tag replaced by a line break: every working line becomes a
    line of its own for the step check, whatever the model put beside a tag."""
    for tag in TAGS:
        text = text.replace(tag, "\n")
    return text

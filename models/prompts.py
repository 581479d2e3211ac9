"""The prompt the policy reads, built in one place so that training encodes exactly what
sampling conditioned on (data.prompt_template, data.chat_template, data.system_prompt).

Plain (the tiny model's default): the filled template is the prompt, tokenized like any
text (the tokenizer adds its <bos>); samplers get the text and tokenize it the same way.
Chat: the tokenizer's chat template renders an optional system turn and the filled template
as the user turn, with the generation prompt. The rendered text already holds the template's
special tokens, so it is tokenized without adding them again, and samplers get those ids
rather than the text (a server would prepend its <bos> a second time).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotflow.data_config import DataConfig


class PromptFormat:
    """Prompts for one tokenizer; `tokenizer` may be None for plain text only."""

    def __init__(self, data: DataConfig, tokenizer: Any = None) -> None:
        if data.chat_template and tokenizer is None:
            raise ValueError("data.chat_template: rendering a chat needs the policy's tokenizer")
        self.data = data
        self.tokenizer = tokenizer

    @property
    def chat(self) -> bool:
        return self.data.chat_template

    def text(self, question: str) -> str:
        """The prompt for `question`, as the policy reads it."""
        return self.render(self.data.user_message(question))

    def render(self, message: str) -> str:
        """`message` as the user's turn (chat), or as it is (plain)."""
        if not self.chat:
            return message
        system = self.data.system_prompt
        turns = [{"role": "system", "content": system}] if system is not None else []
        turns.append({"role": "user", "content": message})
        return self.tokenizer.apply_chat_template(turns, tokenize=False,
                                                  add_generation_prompt=True)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Rendered prompts' ids: <bos> added by the tokenizer for plain text only."""
        if not texts:
            return []
        return [list(ids) for ids in
                self.tokenizer(list(texts), add_special_tokens=not self.chat)["input_ids"]]

    def ids(self, question: str) -> list[int]:
        return self.encode([self.text(question)])[0]

    def for_sampler(self, texts: Sequence[str]) -> list[str] | list[list[int]]:
        """What a sampler is given for rendered prompts, so that its prompt ids equal
        `encode(texts)`: plain text, which every sampler tokenizes with special tokens;
        chat prompts as ids."""
        return self.encode(texts) if self.chat else list(texts)


def policy_prompts(data: DataConfig, policy: str | Path) -> PromptFormat:
    """The format for sampling `policy`: its tokenizer is loaded only for a chat."""
    if not data.chat_template:
        return PromptFormat(data)
    from transformers import AutoTokenizer

    return PromptFormat(data, AutoTokenizer.from_pretrained(str(policy)))


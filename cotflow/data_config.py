"""params.yaml `data`: where the problems come from (the built-in task, a file, a Hub id,
reasoning-gym or CHAMP: cotflow/data/) and how the policy's prompt is written
(models/prompts.py)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from cotflow.config_types import NonNegInt, PosInt, Section

GYM_SOURCE = re.compile(r"reasoning-gym:[A-Za-z0-9_]+")  # the task name is checked on load


class ColumnsConfig(Section):
    question: str
    answer: str
    solution: str | None
    id: str | None
    difficulty: str | None


class ReasoningGymConfig(Section):
    """data.source reasoning-gym:<task> (cotflow/data/gym.py): one set of `size` entries
    generated from `seed`, its first data.n_test distinct questions held out and the next
    data.n_train for training."""

    size: PosInt  # entries generated; the splits are drawn from them, duplicates skipped
    seed: NonNegInt  # the data's own seed: the pipeline's `seed` leaves the problems be
    difficulty: str | None  # entry metadata field giving the difficulty; None: see gym.py
    config: dict[str, Any]  # the task's own settings (checked against the task on load)


class DataConfig(Section):
    # "builtin", a local .jsonl/.json/.parquet path, "reasoning-gym:<task>", "champ" (a test
    # split only), or a Hub dataset id
    source: str
    n_train: PosInt
    n_test: PosInt
    difficulties: list[Annotated[int, Field(ge=1, le=5)]] = Field(min_length=1)  # arithmetic.py
    columns: ColumnsConfig
    answer_format: Literal["auto", "gsm8k", "boxed", "plain"]
    train_split: str
    test_split: str
    prompt_template: str  # the user message: models/prompts.py
    chat_template: bool  # wrap it in the tokenizer's chat template (instruct models)
    system_prompt: str | None  # the chat's system turn; needs chat_template
    reasoning_gym: ReasoningGymConfig  # source reasoning-gym:<task> only

    @field_validator("source")
    @classmethod
    def _gym_task_named(cls, v: str) -> str:
        if v.startswith("reasoning-gym") and not GYM_SOURCE.fullmatch(v):
            raise ValueError(f"{v!r}: expected reasoning-gym:<task>, e.g. reasoning-gym:chain_sum")
        return v

    @field_validator("prompt_template")
    @classmethod
    def _has_question(cls, v: str) -> str:
        if "{question}" not in v:
            raise ValueError("must contain '{question}'")
        return v

    def user_message(self, question: str) -> str:
        """prompt_template with `question` in place of {question}; every other character
        literal, so the paper's `\\boxed{}` needs no escaping (str.format would choke)."""
        return self.prompt_template.replace("{question}", question)

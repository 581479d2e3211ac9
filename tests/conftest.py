"""Shared test helpers: the micro params and the offline, in-workspace environment."""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cotflow.env import apply_defaults

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "tests" / "data" / "params.micro.yaml"

apply_defaults(ROOT)


def micro_params(**section_updates: dict) -> dict:
    raw = yaml.safe_load(MICRO.read_text())
    for section, values in section_updates.items():
        raw[section].update(values)
    return raw


def preset_params_file(path: Path, raw: dict, presets: list[str] | None = None,
                       **overrides: dict) -> Path:
    """`raw` params with per-iteration overrides, written to `path`, then `cotflow preset
    PRESETS` applied to the file."""
    from cotflow.presets import apply_preset

    for key, values in overrides.items():
        raw["iterations"][key]["overrides"] = values
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    if presets:
        apply_preset(path, presets)
    return path


@cache
def _char_tokenizer():
    from models.tokenizer import build_char_tokenizer

    return build_char_tokenizer()


def sample_row(prompt_id: str, sample_idx: int, prompt: str, completion: str, *,
               finished: bool = True) -> dict[str, Any]:
    """A samples.parquet row as the hf backend records it for the tiny model: the character
    tokenizer's ids of the prompt (<bos> first) and of the completion (<eos> iff finished)."""
    tok = _char_tokenizer()
    ids = tok(completion, add_special_tokens=False)["input_ids"]
    ids += [tok.eos_token_id] if finished else []
    return {"prompt_id": prompt_id, "sample_idx": sample_idx, "prompt": prompt,
            "completion": completion, "num_tokens": len(ids), "finished": finished,
            "prompt_ids": tok(prompt)["input_ids"], "completion_ids": ids}


def frozen_pid(marker: Path, within_s: float = 300) -> int:
    """The pid a stage wrote to a fault `marker` once that process is stopped (state T)."""
    deadline = time.time() + within_s
    while time.time() < deadline:
        if marker.is_file() and marker.read_text().strip():
            pid = int(marker.read_text())
            if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "T":
                return pid
        time.sleep(0.1)
    raise AssertionError(f"no stage froze at {marker.name}")

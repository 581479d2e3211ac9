"""Shared test helpers: the micro params and the offline, in-workspace environment."""

from __future__ import annotations

from pathlib import Path

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

"""Ready-made pipelines: `presets/NAME.yaml` merged onto params.yaml.

A preset holds config sections, merged key by key (nested mappings recursively), and an
optional `all_iterations` mapping merged into every iteration of params.yaml (e.g. its
algorithm). The result is validated before params.yaml is rewritten, since params.yaml is
the one file DVC tracks and the only one that drives a run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cotflow.config import ConfigError, _validate

PRESETS = Path(__file__).resolve().parents[1] / "presets"


def available() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_preset(raw: dict[str, Any], name: str) -> dict[str, Any]:
    """params (as read from YAML) with preset `name` applied; raises ConfigError if invalid."""
    path = PRESETS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset {name!r}: unknown (have {', '.join(available())})")
    preset = yaml.safe_load(path.read_text()) or {}
    per_iteration = preset.pop("all_iterations", {})
    out = _merge(raw, preset)
    out["iterations"] = {key: _merge(it, per_iteration)
                         for key, it in (out.get("iterations") or {}).items()}
    cfg = _validate(out, f"preset {name}")
    cfg.validate_overrides()
    return out


def write_preset(params: Path, name: str) -> dict[str, Any]:
    """Rewrite `params` with preset `name` applied; return the new params."""
    from cotflow.records import atomic_path

    out = apply_preset(yaml.safe_load(Path(params).read_text()), name)
    with atomic_path(Path(params)) as tmp:
        tmp.write_text(f"# params.yaml with preset {name!r} applied (cotflow preset {name})\n"
                       + yaml.safe_dump(out, sort_keys=False))
    return out

"""Ready-made iteration lists: `cotflow preset grpo --iterations 3` rewrites the
`iterations:` block of params.yaml; `cotflow preset grpo grpo dpo` mixes types in order.

A preset names an entry of params.yaml `algorithms` and the per-iteration overrides it needs.
All but `raft` sample G = 8 completions per prompt (groups, for the group methods) and keep the
sample budget of params.yaml (allocate.prompts_per_iteration × allocate.n), so presets compare
at equal cost; they also set train.lr (POLICY_GRADIENT_LR, below).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from cotflow.config import ConfigError, PipelineConfig, load_params

GROUP_SIZE = 8
# Policy-gradient and preference steps move the tiny model further per step than RAFT's SFT
# on accepted samples: from the 70.5 % warm start, one GRPO iteration (512 prompts × 8) went
# to 74.2 % at lr 1e-5 and 74.0 % at 3e-5, Dr.GRPO to 74.2 % and 68.0 %; at RAFT's 1e-4
# both fell by 10 to 35 points (benchmarks/algorithms.py). RAFT++ at 512 prompts × 8: 69.0 ±
# 0.8 % after 3 iterations at 1e-4 on deduplicated accepted samples, below the warm start;
# 77.0 ± 1.3 % at 1e-5 on every accepted sample (benchmarks/gvm_speedup.py, 3 seeds). So these
# presets set train.lr.
POLICY_GRADIENT_LR = 1.0e-5
# preset -> (algorithms entry, G = 8 per prompt and POLICY_GRADIENT_LR, extra overrides)
PRESETS: dict[str, tuple[str, bool, dict[str, dict[str, Any]]]] = {
    "raft": ("raft", False, {}),
    # RAFT++ as the GVM paper's baseline: 8 samples per prompt, trained on every accepted
    # sample (duplicates too: GVM's extra samples of a prompt are the point).
    "raft++": ("raft++", True, {"train": {"dedup": False}}),
    "grpo": ("grpo", True, {}),
    "dr-grpo": ("dr-grpo", True, {}),
    "dapo": ("dapo", True, {"sample": {"dynamic_sampling_rounds": 2}}),
    "seed-grpo": ("seed-grpo", True, {}),
    "nft": ("nft", True, {}),
    "dpo": ("dpo", True, {}),
    # GVM (specs/algorithms-a.md §1): the same budget, spent per prompt where it lowers the
    # gradient's variance most, after a probe of allocate.gvm.probe_n samples per prompt.
    "gvm-raft": ("raft++", True, {"allocate": {"method": "gvm"}, "train": {"dedup": False}}),
    "gvm-grpo": ("grpo", True, {"allocate": {"method": "gvm"}}),
}


def iterations_for(cfg: PipelineConfig, names: list[str]) -> dict[str, dict[str, Any]]:
    """The `iterations` mapping that runs `names` in order from the warm start."""
    out: dict[str, dict[str, Any]] = {}
    budget = cfg.allocate.prompts_per_iteration * cfg.allocate.n
    for i, name in enumerate(names):
        if name not in PRESETS:
            raise ConfigError(f"preset {name!r}: unknown (have {', '.join(PRESETS)})")
        algorithm, grouped, extra = PRESETS[name]
        overrides = {k: dict(v) for k, v in extra.items()}
        if grouped:
            prompts = budget // GROUP_SIZE
            if prompts < 1:
                raise ConfigError(f"preset {name}: a sample budget of {budget} is below one "
                                  f"group of {GROUP_SIZE}")
            overrides["allocate"] = {**overrides.get("allocate", {}),
                                     "prompts_per_iteration": prompts, "n": GROUP_SIZE}
            overrides["train"] = {**overrides.get("train", {}), "lr": POLICY_GRADIENT_LR}
        entry: dict[str, Any] = {"algorithm": algorithm,
                                 "prev": "base" if i == 0 else f"iter-{i:03d}"}
        if overrides:
            entry["overrides"] = overrides
        out[f"{i + 1:03d}"] = entry
    return out


def render_iterations(iterations: dict[str, dict[str, Any]]) -> str:
    lines = ["iterations:"]
    for key, entry in iterations.items():
        flow = yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=10_000)
        lines.append(f'  "{key}": {flow.strip()}')
    return "\n".join(lines) + "\n"


def apply_preset(params: Path, names: list[str]) -> str:
    """Rewrite params.yaml's `iterations:` block (the last top-level key; everything above
    it, comments included, is kept). Validated before the file is replaced."""
    cfg = load_params(params)
    text = params.read_text()
    marker = "\niterations:"
    if marker not in text:
        raise ConfigError(f"{params}: no top-level 'iterations:' block to replace")
    head, _, tail = text.partition(marker)
    if any(line and not line[0].isspace() and not line.startswith("#")
           for line in tail.splitlines()[1:]):
        raise ConfigError(f"{params}: 'iterations:' must be the last top-level key")
    block = render_iterations(iterations_for(cfg, names))
    new = head + "\n" + block
    fd, tmp = tempfile.mkstemp(dir=params.parent, prefix=f".{params.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new)
        load_params(tmp)
        os.replace(tmp, params)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return block

"""Ready-made iteration lists: `cotflow preset grpo --iterations 3` rewrites the
`iterations:` block of params.yaml; `cotflow preset grpo grpo dpo` mixes types in order.

A preset names an entry of params.yaml `algorithms` and the per-iteration overrides it needs.
All but `raft` sample G = 8 completions per prompt (groups, for the group methods) and keep the
sample budget of params.yaml (allocate.prompts_per_iteration × allocate.n), so presets compare
at equal cost. Each also takes its paper's regime: one pass over the rollout batch in as many
optimizer steps as the paper takes per rollout batch (PAPER_STEPS), and train.lr (LR, below).
`raft` keeps params.yaml's regime, the default pipeline's measured one. A name in LOOPS
stands for several iterations: `veripo` is grpo, veripo-dpo, grpo, veripo-dpo. A preset whose
method starts from a warm start of its own (TON's thought dropout: WARM_STARTS) also sets
the settings the base stages read for it, in place, comments kept.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from cotflow.config import ConfigError, PipelineConfig, load_params

GROUP_SIZE = 8
# Optimizer steps per rollout batch in the papers (specs/): Minimal-RL's RAFT++ and the GVM
# paper's RAFT++ and GRPO baselines take 1024 prompts in mini-batches of 256 (4); oat's
# Dr.GRPO, which SEED-GRPO keeps, one step (rollout batch = train batch, 1 epoch); DAPO
# 512 × 16 samples in mini-batches of 512 (16); NFT 512 prompts in mini-batches of 32 (16).
PAPER_STEPS = {"raft++": 4, "grpo": 4, "dr-grpo": 1, "seed-grpo": 1, "dapo": 16, "nft": 16,
               # Critique-GRPO: 128 prompts in mini-batches of 64 (specs/algorithms-a.md §3.7)
               "critique-grpo": 2}
# Algorithms whose every sampled response also draws a refinement (Critique-GRPO): the
# budget pays for both, so they sample half the prompts of the others (equal samples).
REFINES = frozenset({"critique-grpo"})
# SPO-chain (rho-1.1B GSM8K): 512 episodes per iteration in optimizer steps of 64, two
# epochs: 8 steps a pass (specs/algorithms-b.md §2.5). Whitening is per mini-batch there, so
# the preset's micro-batch is its mini-batch.
SPO_STEPS, SPO_EPOCHS = 8, 2
# SPO-tree: 128 edges per optimizer step, one pass over 512 (§2.5): 4 steps per iteration.
SPO_TREE_STEPS = 4
# TON trains with TRL 0.14, one step per rollout batch of 14 prompts; one step per iteration
# here is Dr.GRPO's regime, measured weaker, so ton keeps grpo's 4 steps and rate.
PAPER_STEPS["ton"] = 4
# VerIPO's DPO stage: a global batch of 32 pairs, one pass (specs/algorithms-b.md §4.2).
DPO_PAIRS_PER_STEP = 32
# Learning rates of the presets at these steps, with params.yaml's 10-step warmup of each
# iteration's fresh AdamW. Measured from a 66.0 % warm start, one iteration of 4096 samples
# (benchmarks/algorithms.py, seed 0): GRPO at 1e-4 70.5 %; RAFT++ 1e-4 74.2 %; Dr.GRPO 1e-4
# (its one step at 1e-5) 68.2 %; DAPO 3e-5 70.8 % and 1e-4 65.0 %; NFT 3e-5 69.0 % and 1e-4
# 66.0 %: sixteen steps want a smaller rate than four. DPO keeps the 1e-5 of its issue.
LR: dict[str, float] = {
    "raft++": 1.0e-4, "grpo": 1.0e-4, "dr-grpo": 1.0e-4, "seed-grpo": 1.0e-4, "dapo": 3.0e-5,
    "nft": 3.0e-5, "dpo": 1.0e-5,
    "critique-grpo": 1.0e-4,  # GRPO's, not measured for Critique-GRPO
    # Not measured for spo: sixteen steps per rollout batch, as dapo and nft (the paper's
    # 1e-6 is for a 1.1B model).
    "spo": 3.0e-5, "spo-tree": 1.0e-4,  # spo-tree: 4 steps, as grpo's (not measured)
}
LR["ton"] = LR["grpo"]
# preset -> (algorithms entry, G = 8 per prompt, extra overrides)
PRESETS: dict[str, tuple[str, bool, dict[str, dict[str, Any]]]] = {
    "raft": ("raft", False, {}),
    # RAFT++ as the GVM paper's baseline: 8 samples per prompt, every rollout trained.
    "raft++": ("raft++", True, {}),
    "grpo": ("grpo", True, {}),
    "dr-grpo": ("dr-grpo", True, {}),
    "dapo": ("dapo", True, {"sample": {"dynamic_sampling_rounds": 2}}),
    "seed-grpo": ("seed-grpo", True, {}),
    # NFT trains on mixed groups only and refills as DAPO does (specs/algorithms-a.md §4.4),
    # with the NFT scripts' AdamW weight decay.
    "nft": ("nft", True, {"sample": {"dynamic_sampling_rounds": 2},
                          "train": {"weight_decay": 0.1}}),
    "dpo": ("dpo", True, {}),
    # SPO-chain: the sample stage adds N MC continuations per segment boundary, counted
    # in its stats as mc_samples; compare arms on the samples axis, which counts them.
    "spo-chain": ("spo", True, {}),
    # SPO-tree: one tree per prompt (sample.tree) instead of 8 samples; as many prompts as
    # full trees fit the budget (8192 samples: 31 trees of 6-6-6, the paper's 16-32).
    "spo-tree": ("spo-tree", False, {}),
    # GVM (specs/algorithms-a.md §1): the same budget, spent per prompt where it lowers the
    # gradient's variance most, after a probe of allocate.gvm.probe_n samples per prompt.
    "gvm-raft": ("raft++", True, {"allocate": {"method": "gvm"}}),
    "gvm-grpo": ("grpo", True, {"allocate": {"method": "gvm"}}),
    # Critique-GRPO (specs/algorithms-a.md §3): 8 responses per prompt, each critiqued and
    # refined; groups of 7 + the selected refinement. The default critique is the released
    # script's; one preset per critique type for ablation. The tiny model reads critiques
    # only after a warm start with warmstart.refinement_examples (README).
    "critique-grpo": ("critique-grpo", True, {}),
    **{f"critique-grpo-{t.replace('_', '-')}": (
        "critique-grpo", True, {"algorithms": {"critique-grpo": {"critique": t}}})
       for t in ("indicative", "cot", "self")},
    # VerIPO's DPO step on the previous GRPO iteration's rollouts (it samples nothing):
    # DPO's regime, VerIPO's batch of 32 pairs (specs/algorithms-b.md §4.2).
    "veripo-dpo": ("veripo", False, {"train": {"epochs": 1, "mini_batch_size": DPO_PAIRS_PER_STEP,
                                               "lr": LR["dpo"]}}),
}
# Presets that stand for several iterations: VerIPO's two GRPO → verifier → DPO loops.
LOOPS: dict[str, list[str]] = {"veripo": ["grpo", "veripo-dpo", "grpo", "veripo-dpo"]}
# TON (specs/algorithms-b.md §3) and its baseline: the same rewards, format and regime; the
# warm starts differ only in thought dropout, the paper's comparison (§3.9).
PRESETS["ton"] = ("ton", True, {})
PRESETS["grpo-think"] = ("ton", True, {})
# Presets with a warm start of their own: the params.yaml settings (section.key) that the
# base stages read, which applying the preset sets. In TON's format level 4's longest
# target is 71 characters (48 fits the \boxed{} one's 46): 80 new tokens hold it, its <eos>
# and a few digits more.
THINK = {"verify.format": "think", "sample.max_new_tokens": 80, "evaluate.max_new_tokens": 80}
WARM_STARTS: dict[str, dict[str, Any]] = {
    "ton": {**THINK, "warmstart.thought_dropout": 0.5},
    "grpo-think": {**THINK, "warmstart.thought_dropout": 0.0},
}


def regime(algorithm: str, budget: int) -> dict[str, Any]:
    """The train overrides that give `algorithm` its paper's steps per rollout batch.

    params.yaml's per-iteration warmup stays: each iteration starts a fresh AdamW, whose
    first steps move every weight by about lr whatever its gradient (sign-like). Measured
    from a 66.0 % warm start without the warmup: GRPO's 4 steps at 1e-4 fell to 58.8 %,
    Dr.GRPO's single step at 1e-4 to 36.8 % (benchmarks/algorithms.py, one seed)."""
    if algorithm == "dpo":
        return {"epochs": 1, "mini_batch_size": DPO_PAIRS_PER_STEP, "lr": LR["dpo"]}
    if algorithm == "spo":
        mini = math.ceil(budget / SPO_STEPS)
        return {"epochs": SPO_EPOCHS, "mini_batch_size": mini, "micro_batch_size": mini,
                "lr": LR["spo"]}
    steps = PAPER_STEPS[algorithm]
    return {"epochs": 1, "mini_batch_size": math.ceil(budget / steps), "lr": LR[algorithm]}


def iterations_for(cfg: PipelineConfig, names: list[str]) -> dict[str, dict[str, Any]]:
    """The `iterations` mapping that runs `names` in order from the warm start."""
    out: dict[str, dict[str, Any]] = {}
    budget = cfg.allocate.prompts_per_iteration * cfg.allocate.n
    names = [n for name in names for n in LOOPS.get(name, [name])]
    for i, name in enumerate(names):
        if name not in PRESETS:
            raise ConfigError(f"preset {name!r}: unknown (have "
                              f"{', '.join([*PRESETS, *LOOPS])})")
        algorithm, grouped, extra = PRESETS[name]
        overrides = {k: dict(v) for k, v in extra.items()}
        if grouped:
            per_prompt = GROUP_SIZE * (2 if algorithm in REFINES else 1)
            prompts = budget // per_prompt
            if prompts < 1:
                raise ConfigError(f"preset {name}: a sample budget of {budget} is below one "
                                  f"group's {per_prompt} samples")
            overrides["allocate"] = {**overrides.get("allocate", {}),
                                     "prompts_per_iteration": prompts, "n": GROUP_SIZE}
            overrides["train"] = {**overrides.get("train", {}),
                                  **regime(algorithm, prompts * GROUP_SIZE)}
        if algorithm == "spo-tree":
            overrides = _tree_overrides(cfg, budget)
        entry: dict[str, Any] = {"algorithm": algorithm,
                                 "prev": "base" if i == 0 else f"iter-{i:03d}"}
        if overrides:
            entry["overrides"] = overrides
        out[f"{i + 1:03d}"] = entry
    return out


def _tree_overrides(cfg: PipelineConfig, budget: int) -> dict[str, dict[str, Any]]:
    """spo-tree: one tree per prompt, as many as full trees fit the budget; its edges (at
    most max_edges_per_question per tree) trained in SPO_TREE_STEPS steps."""
    from cotflow.algorithms.spo import nodes_per_tree

    trees = budget // nodes_per_tree(cfg.sample.tree.branching)
    if trees < 1:
        raise ConfigError(f"preset spo-tree: a sample budget of {budget} is below one tree of "
                          f"{nodes_per_tree(cfg.sample.tree.branching)} nodes (sample.tree)")
    entry = cfg.algorithms.get("spo-tree")
    if entry is None:
        raise ConfigError("preset spo-tree: params.yaml has no `algorithms: spo-tree` entry")
    mini = math.ceil(trees * entry.max_edges_per_question / SPO_TREE_STEPS)
    return {"allocate": {"prompts_per_iteration": trees, "n": 1},
            "train": {"epochs": 1, "mini_batch_size": mini, "micro_batch_size": mini,
                      "lr": LR["spo-tree"]}}


def render_iterations(iterations: dict[str, dict[str, Any]]) -> str:
    lines = ["iterations:"]
    for key, entry in iterations.items():
        flow = yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=10_000)
        lines.append(f'  "{key}": {flow.strip()}')
    return "\n".join(lines) + "\n"


def warm_start_of(names: list[str]) -> dict[str, Any]:
    """The settings of the one warm start `names` need (none: {})."""
    wanted = {n: WARM_STARTS[n] for n in names if n in WARM_STARTS}
    if len({tuple(sorted(w.items())) for w in wanted.values()}) > 1:
        raise ConfigError(f"presets {', '.join(wanted)} need different warm starts; a "
                          "pipeline has one")
    return next(iter(wanted.values()), {})


def set_settings(text: str, settings: dict[str, Any], where: Path) -> str:
    """`text` (params.yaml) with each `section.key: value` line set to its value, the
    line's comment kept."""
    for dotted, value in settings.items():
        section, key = dotted.split(".")
        start = re.search(rf"^{re.escape(section)}:.*$", text, re.M)
        end = re.compile(r"^\S", re.M)
        stop = end.search(text, start.end() + 1) if start else None
        limit = stop.start() if stop else len(text)
        line = re.compile(rf"^(  {re.escape(key)}:[ \t]*)([^#\n]*?)([ \t]*(?:#[^\n]*)?)$", re.M)
        found = line.search(text, start.end(), limit) if start else None
        if found is None:
            raise ConfigError(f"{where}: no {dotted} setting to set")
        shown = yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()
        text = text[:found.start(2)] + shown + text[found.end(2):]
    return text


def apply_preset(params: Path, names: list[str]) -> str:
    """Rewrite params.yaml's `iterations:` block (the last top-level key; everything above
    it, comments included, is kept) and, for presets with a warm start of their own
    (WARM_STARTS), the settings the base stages read for it. Validated before the file is
    replaced."""
    cfg = load_params(params)
    text = params.read_text()
    marker = "\niterations:"
    if marker not in text:
        raise ConfigError(f"{params}: no top-level 'iterations:' block to replace")
    head, _, tail = text.partition(marker)
    if any(line and not line[0].isspace() and not line.startswith("#")
           for line in tail.splitlines()[1:]):
        raise ConfigError(f"{params}: 'iterations:' must be the last top-level key")
    warm = warm_start_of(names)
    if warm:
        head = set_settings(head, warm, params)  # none of them is what iterations_for reads
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
    if warm:
        block = f"# warm start: {', '.join(f'{k}={v}' for k, v in warm.items())}\n" + block
    return block

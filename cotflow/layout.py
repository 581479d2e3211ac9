"""Artifact layout: the only place that builds artifact paths.

    artifacts/validated.json  the validate stage's mark (constant; every stage depends on it)
    artifacts/base/      model/ (model: source.json naming model.name_or_path, and for a
                         GGUF source the checkpoint converted from it),
                         train.parquet test.parquet samples.parquet verdicts.parquet
                         flags.parquet (data; the last three empty: iterations may read
                         their prev folder's), policy/ (warmstart), metrics.json curve.json
                         evaluation.parquet (baseline), stats/<stage>.json
                         timing/<stage>.json (untracked), .ckpt/ (while warmstart runs)
    artifacts/iter-001/  allocation.parquet budget.parquet samples.parquet values.parquet
                         continuations.parquet tree.parquet verdicts.parquet
                         critiques.parquet judgements.parquet flags.parquet policy/
                         metrics.json train_steps.json
                         evaluation.parquet stats/<stage>.json curve.json accuracy.png
                         timing/<stage>.json (untracked)
                         .ckpt/ (resume checkpoints while train runs; untracked)
    logs/<folder>/<stage>.log  each stage's last log (untracked); logs/validate.log
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGES = ("allocate", "sample", "verify", "critique", "judge", "train", "evaluate")
# The stages that fill artifacts/base, in order: the starting model (a GGUF file converted
# once), the data splits, the warm start (SFT) and its held-out evaluation. Apart, so that
# each reruns only when what it reads changes (an evaluation setting does not redo the warm
# start, a data setting does not convert the model again).
BASE_STAGES = ("model", "data", "warmstart", "baseline")


@dataclass(frozen=True)
class IterationLayout:
    """Paths of one iteration's folder; `prev` is the folder whose policy it starts from."""

    dir: Path
    prev_dir: Path
    key: str

    @property
    def allocation(self) -> Path:
        return self.dir / "allocation.parquet"

    @property
    def budget(self) -> Path:
        """GVM's per-prompt statistics behind the allocation (empty for uniform)."""
        return self.dir / "budget.parquet"

    @property
    def samples(self) -> Path:
        return self.dir / "samples.parquet"

    @property
    def values(self) -> Path:
        """SPO-chain's segment boundaries and MC values per sample (empty otherwise)."""
        return self.dir / "values.parquet"

    @property
    def continuations(self) -> Path:
        """The MC continuations behind `values` (empty unless SPO)."""
        return self.dir / "continuations.parquet"

    @property
    def tree(self) -> Path:
        """SPO-tree's sampled trees, whose leaves are samples.parquet (empty otherwise)."""
        return self.dir / "tree.parquet"

    @property
    def prev_samples(self) -> Path:
        """The previous iteration's samples (absent when it is `base`)."""
        return self.prev_dir / "samples.parquet"

    @property
    def prev_verdicts(self) -> Path:
        return self.prev_dir / "verdicts.parquet"

    @property
    def verdicts(self) -> Path:
        return self.dir / "verdicts.parquet"

    @property
    def critiques(self) -> Path:
        return self.dir / "critiques.parquet"

    @property
    def judgements(self) -> Path:
        return self.dir / "judgements.parquet"

    @property
    def flags(self) -> Path:
        """The rollout-aware verifier's per-rollout flags (VerIPO; empty otherwise)."""
        return self.dir / "flags.parquet"

    @property
    def prev_flags(self) -> Path:
        return self.prev_dir / "flags.parquet"

    @property
    def policy(self) -> Path:
        return self.dir / "policy"

    @property
    def prev_policy(self) -> Path:
        return self.prev_dir / "policy"

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.json"

    @property
    def train_steps(self) -> Path:
        """Per optimizer step: loss, grad norm and the objective's metrics (a DVC plot)."""
        return self.dir / "train_steps.json"

    @property
    def curve(self) -> Path:
        return self.dir / "curve.json"

    @property
    def evaluation(self) -> Path:
        return evaluation_file(self.dir)

    @property
    def prev_curve(self) -> Path:
        return self.prev_dir / "curve.json"

    @property
    def plot(self) -> Path:
        return self.dir / "accuracy.png"

    def stats(self, stage: str) -> Path:
        return stats_file(self.dir, stage)

    def timing(self, stage: str) -> Path:
        return timing_file(self.dir, stage)


def evaluation_file(folder: Path) -> Path:
    """Per held-out problem: greedy and sampled correctness (records.SCHEMAS "evaluation")."""
    return folder / "evaluation.parquet"


def stats_file(folder: Path, stage: str) -> Path:
    """Deterministic stage statistics: a DVC metric."""
    return folder / "stats" / f"{stage}.json"


def log_file(folder: Path, stage: str) -> Path:
    """The stage's last log: `<root>/logs/<folder name>/<stage>.log`, beside the artifacts
    rather than in them, so a stage that fails on bad input leaves its outputs untouched."""
    return folder.parent.parent / "logs" / folder.name / f"{stage}.log"


def checkpoint_dir(folder: Path) -> Path:
    """Resume checkpoints of the folder's training stage (hidden, .dvcignore'd, not an
    output; removed once the stage has finished)."""
    return folder / ".ckpt"


def timing_file(folder: Path, stage: str) -> Path:
    """Seconds, tokens/s, memory: machine-dependent, so DVC does not track it."""
    return folder / "timing" / f"{stage}.json"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def validated(self) -> Path:
        """The validate stage's output: the same bytes whatever the params, a dep of every
        other stage so that DVC validates first and stops there on bad input."""
        return self.artifacts / "validated.json"

    @property
    def validate_log(self) -> Path:
        return self.root / "logs" / "validate.log"

    @property
    def base(self) -> Path:
        return self.artifacts / "base"

    @property
    def base_model(self) -> Path:
        """The model stage's output: the checkpoint converted from a GGUF source (models/
        gguf.py), which the later stages load instead of the file; just its note otherwise."""
        return self.base / "model"

    @property
    def base_model_source(self) -> Path:
        """What the model stage was given (model.name_or_path; a GGUF file's hash)."""
        return self.base_model / "source.json"

    @property
    def train_set(self) -> Path:
        return self.base / "train.parquet"

    @property
    def test_set(self) -> Path:
        return self.base / "test.parquet"

    @property
    def base_policy(self) -> Path:
        return self.base / "policy"

    @property
    def base_rollout_files(self) -> dict[str, Path]:
        """Record kind -> the base folder's (empty) samples, verdicts and flags: an iteration
        may read its previous folder's (VerIPO's DPO judges GRPO's rollouts), and dvc.yaml
        can then list them as deps of every iteration's stage."""
        return {kind: self.base / f"{kind}.parquet" for kind in ("samples", "verdicts", "flags")}

    @property
    def base_metrics(self) -> Path:
        return self.base / "metrics.json"

    @property
    def base_curve(self) -> Path:
        return self.base / "curve.json"

    @property
    def base_evaluation(self) -> Path:
        return evaluation_file(self.base)

    def folder(self, name: str) -> Path:
        """'base' or 'iter-NNN' -> its path."""
        return self.artifacts / name

    def iteration(self, key: str, prev: str) -> IterationLayout:
        return IterationLayout(dir=self.folder(f"iter-{key}"), prev_dir=self.folder(prev), key=key)

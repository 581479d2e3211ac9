"""Resume checkpoints for a long optimizer loop (`torch_trainer.optimize`).

Every N optimizer steps the loop saves what it needs to continue as if never stopped:
weights, optimizer state, its step count (the LR schedule is a function of it), the torch
and python RNG states and its running sums. The step plan is deterministic given its seed,
so a resumed run skips the optimizer steps already taken.
One file, written atomically, so a kill leaves the previous checkpoint intact.

The file lives in a hidden folder of the stage's own folder (``.ckpt/``: not a DVC output,
and .dvcignore'd), and carries a fingerprint of everything the result depends on (config,
input files, trainer code): a checkpoint left by a run with other inputs is ignored.
`tasks.common.run_stage` removes `.ckpt/` once the stage has finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

def fingerprint(config: Any, files: Iterable[Path]) -> str:
    """sha256 over a JSON-able config and the bytes of `files` (folders: every file in them)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for path in files:
        path = Path(path)
        members = (sorted(p for p in path.rglob("*") if p.is_file()
                          and "__pycache__" not in p.parts) if path.is_dir() else [path])
        for member in members:
            h.update(str(member.relative_to(path) if path.is_dir() else path.name).encode())
            with open(member, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Checkpointer:
    """Save every `every` optimizer steps into `folder` (every=0: never save, never resume)."""

    folder: Path
    every: int
    fingerprint: str

    @classmethod
    def for_stage(cls, stage_dir: Path, name: str, every: int, fp: str) -> Checkpointer:
        from cotflow.layout import checkpoint_dir

        return cls(checkpoint_dir(Path(stage_dir)) / name, every, fp)

    @property
    def path(self) -> Path:
        return self.folder / "state.pt"

    def due(self, steps: int) -> bool:
        return self.every > 0 and steps % self.every == 0

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint of a run with the same fingerprint, else None."""
        if self.every <= 0 or not self.path.is_file():
            return None
        import torch

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - an unreadable checkpoint only costs time
            log.warning("ignoring unreadable checkpoint %s: %s", self.path, err)
            return None
        if state.get("fingerprint") != self.fingerprint:
            log.warning("ignoring checkpoint %s: it is from other inputs or config", self.path)
            return None
        log.info("resuming from %s at optimizer step %d", self.path, state["steps"])
        return state

    def save(self, state: dict[str, Any]) -> None:
        import torch

        from cotflow import faults
        from cotflow.records import atomic_path

        with atomic_path(self.path) as tmp:
            torch.save({**state, "fingerprint": self.fingerprint}, tmp)
        faults.point("checkpoint")

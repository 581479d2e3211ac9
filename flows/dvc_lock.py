"""dvc.lock, read the fast way in the flow's process (what `cotflow run` pays per stage).

After each stage DVC updates dvc.lock: it loads the whole file with ruamel's round-trip
loader, which is pure Python because it keeps the comments and styles of hand-written YAML,
and dumps it back. dvc.lock is DVC's own output, without comments or styles, so ruamel's
safe loader (its C parser) gives the same data and the dump writes the same bytes (tested:
tests/test_dvc_lock.py). The default pipeline's lock holds 40 stages (about 190 KB): the
round-trip load took 1.8 s of the last stages' 3-5 s outside their functions, the safe
load 0.3 s (measured). A plain `dvc repro` is DVC's own process and is left as it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_MARK = "_cotflow_safe_lock"


def read_lock_safely() -> None:
    """Make DVC's update of a dvc.lock load it with the safe loader; every other file
    (dvc.yaml, which may carry comments) keeps the round-trip one. Idempotent."""
    from dvc.utils.serialize import _yaml

    round_trip = _yaml.parse_yaml_for_update
    if getattr(round_trip, _MARK, False):
        return

    def parse(text: str, path: Any) -> Any:
        if Path(str(path)).name == "dvc.lock":
            return _yaml.parse_yaml(text, path)
        return round_trip(text, path)

    setattr(parse, _MARK, True)
    _yaml.parse_yaml_for_update = parse

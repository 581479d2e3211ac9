"""model: the starting model, made loadable once for every later stage.

A GGUF source (model.name_or_path a `.gguf` path, or `smollm2`: models/gguf.py) is converted
here into a save_pretrained checkpoint, which the data and warm start stages then load
(models/policy.py `source_model`) as they load any checkpoint; DVC caches it, so the
conversion runs once per source. Any other source ("tiny", a folder, a Hub id) is loaded
from where it is, so this stage writes only the note that names it, in well under a second.

Output: artifacts/base/model/ (source.json, and the converted checkpoint beside it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from cotflow.config import PipelineConfig
from cotflow.layout import Layout
from cotflow.records import atomic_path, write_json

log = logging.getLogger(__name__)


def run(cfg: PipelineConfig, layout: Layout) -> tuple[dict[str, Any], dict[str, Any]]:
    from models.gguf import is_gguf

    src = cfg.model.name_or_path
    note: dict[str, Any] = {"name_or_path": src}
    stats: dict[str, Any] = {"converted": False, "parameters": None}
    timing: dict[str, Any] = {}
    # All or nothing: a conversion killed mid-way leaves no folder a later stage could load.
    with atomic_path(layout.base_model, is_dir=True) as tmp:
        if is_gguf(src):
            note["gguf"], stats["parameters"], timing = _convert(cfg, src, tmp)
            stats["converted"] = True
        write_json(tmp / layout.base_model_source.name, note)
    return stats, timing


def _convert(
    cfg: PipelineConfig, src: str, folder: Path
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """Write the checkpoint of GGUF source `src` into `folder`: (what it came from, its
    parameter count, the seconds of reading and of writing it)."""
    import torch

    from models.gguf import check_gguf, describe, load_gguf
    from models.policy import PolicyError, write_checkpoint

    torch.set_num_threads(cfg.threads)
    path = check_gguf(src)  # checked by validate; again here for a stage run by hand
    log.info(
        "converting %s (%s, %.0f MB) into a checkpoint", src, path.name, path.stat().st_size / 2**20
    )
    t0 = time.perf_counter()
    try:
        model, tokenizer = load_gguf(path)
    except (OSError, ValueError) as err:  # e.g. an architecture transformers cannot read
        raise PolicyError(
            f"model.name_or_path {src!r}: transformers cannot read {path.name}: "
            f"{str(err).splitlines()[0]}"
        ) from None
    t1 = time.perf_counter()
    write_checkpoint(model, tokenizer, folder)
    t2 = time.perf_counter()
    params = sum(p.numel() for p in model.parameters())
    log.info("%s: %d parameters, read in %.1f s, written in %.1f s", src, params, t1 - t0, t2 - t1)
    timing = {"model/read_seconds": round(t1 - t0, 2), "model/write_seconds": round(t2 - t1, 2)}
    return describe(src, path), params, timing

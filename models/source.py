"""model.name_or_path: what it may name, checked without loading anything (the validate
stage), and what the stages load for it (`source_model`).

It names "tiny" (built by the warm start), a local save_pretrained folder, a Hub id
(offline: in the local cache), or a GGUF file (models/gguf.py: a `.gguf` path or `smollm2`),
which the `model` stage converts once into a checkpoint that the later stages load instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cotflow.layout import Layout
from models.gguf import check_gguf, describe, gguf_file, is_gguf, load_gguf_tokenizer
from models.policy import PolicyError, looks_local


def check_model_source(src: str, root: Path = Path(".")) -> None:
    """Refuse model.name_or_path as typed in params.yaml where it cannot load, without
    loading anything: a local path with no checkpoint, a GGUF file (or the package shipping
    it, or the gguf extra) that is missing, or a Hub id that is not in the local cache while
    the Hub is offline (cotflow/env.py turns that on unless told otherwise)."""
    if src == "tiny":
        return
    if is_gguf(src):
        check_gguf(src, root)
        return
    if looks_local(src, root):
        if not (Path(root) / src / "config.json").is_file():
            raise PolicyError(
                f"model.name_or_path {src!r}: no saved checkpoint there (no "
                "config.json); give the folder of a save_pretrained model"
            )
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return  # downloaded when the data and warmstart stages load it
    try:
        cached = try_to_load_from_cache(src, "config.json")
    except ValueError as err:  # HFValidationError: neither a path nor a Hub id
        raise PolicyError(
            f"model.name_or_path {src!r}: not a local path or Hub id ({err})"
        ) from None
    if not isinstance(cached, str):
        raise PolicyError(
            f"model.name_or_path {src!r}: not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is on; download it "
            "there first or give a local path"
        )


def check_chat_template(data: Any, name_or_path: str, root: Path = Path(".")) -> None:
    """Refuse data.chat_template for a tokenizer that has no chat template (models/prompts.py
    renders the chat). Validate runs it after check_model_source: the checkpoint is there."""
    if not data.chat_template:
        return
    from transformers import AutoTokenizer

    from cotflow.config_types import ConfigError

    src = str(Path(root) / name_or_path) if looks_local(name_or_path, root) else name_or_path
    gguf = None
    if is_gguf(name_or_path):
        # The model stage's conversion of this very file where there is one (a tokenizer
        # from a GGUF file takes seconds more), else the file: validate runs before it.
        gguf = gguf_file(name_or_path, root)
        layout = Layout(root)
        if _converted_from(layout, name_or_path, gguf):
            src, gguf = str(layout.base_model), None
    try:
        tokenizer = load_gguf_tokenizer(gguf) if gguf else AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as err:  # ValueError: a GGUF transformers cannot read
        raise ConfigError(
            f"data.chat_template: cannot load the tokenizer of "
            f"model.name_or_path {name_or_path!r}: {err}"
        ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"data.chat_template: the tokenizer of model.name_or_path "
            f"{name_or_path!r} has no chat template; set data.chat_template: "
            "false and write the whole prompt into data.prompt_template"
        )


def source_model(cfg: Any, layout: Layout) -> str:
    """What a stage loads for model.name_or_path: "tiny" (the warm start builds it), the
    typed folder or Hub id (refused here where it cannot load, with its own message), or for
    a GGUF source the checkpoint the model stage converted it into."""
    src = cfg.model.name_or_path
    if src == "tiny":
        return src
    if not is_gguf(src):
        check_model_source(src)
        return src
    folder = layout.base_model
    made_from = read_source(layout).get("name_or_path")
    if made_from != src or not (folder / "config.json").is_file():
        # DVC keeps the two in step; a stage run by hand may come before the model stage.
        held = "" if made_from is None else f" (it holds {made_from!r}'s)"
        raise PolicyError(
            f"model.name_or_path {src!r}: {folder} holds no checkpoint converted "
            f"from it{held}; run the model stage first (dvc repro model)"
        )
    return str(folder)


def _converted_from(layout: Layout, src: str, path: Path) -> bool:
    """Whether the model stage's checkpoint is that of GGUF file `path` as it is now (its
    name, size, SHA-256 and package version), not merely of the same name."""
    note = read_source(layout)
    if note.get("name_or_path") != src or not (layout.base_model / "config.json").is_file():
        return False
    return note.get("gguf") == describe(src, path)


def read_source(layout: Layout) -> dict[str, Any]:
    """The model stage's note of what it was given ({} before it has run)."""
    from cotflow.records import read_json

    note = layout.base_model_source
    return read_json(note) if note.is_file() else {}

"""Load and save policies: the tiny from-scratch model, a Hub id or a local checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cotflow.config import ModelConfig


class PolicyError(ValueError):
    """A model path or id cannot be loaded; the message says what to fix."""


def build_tiny_policy(cfg: ModelConfig, seed: int) -> tuple[Any, Any]:
    """A small Llama-shaped causal LM and the character tokenizer, randomly initialised."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from models.tokenizer import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    # LlamaConfig, not Qwen2Config: AutoTokenizer on a qwen2 folder swaps in Qwen's BPE.
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    return model, tokenizer


def looks_local(src: str, root: Path = Path(".")) -> bool:
    """Whether `src` is a path (relative to `root`) rather than a Hub id ("name" or
    "org/name"): it starts with . or /, exists, or has more than one slash."""
    return src.startswith((".", "/")) or (Path(root) / src).exists() or src.count("/") > 1


def check_model_source(src: str, root: Path = Path(".")) -> None:
    """Refuse model.name_or_path as typed in params.yaml where it cannot load, without
    loading anything: a local path with no checkpoint, or a Hub id that is not in the local
    cache while the Hub is offline (cotflow/env.py turns that on unless told otherwise)."""
    if src == "tiny":
        return
    if looks_local(src, root):
        if not (Path(root) / src / "config.json").is_file():
            raise PolicyError(f"model.name_or_path {src!r}: no saved checkpoint there (no "
                              "config.json); give the folder of a save_pretrained model")
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return  # downloaded when the data and warmstart stages load it
    try:
        cached = try_to_load_from_cache(src, "config.json")
    except ValueError as err:  # HFValidationError: neither a path nor a Hub id
        raise PolicyError(f"model.name_or_path {src!r}: not a local path or Hub id "
                          f"({err})") from None
    if not isinstance(cached, str):
        raise PolicyError(f"model.name_or_path {src!r}: not in the local Hugging Face cache "
                          f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is on; download it "
                          "there first or give a local path")


def check_chat_template(data: Any, name_or_path: str, root: Path = Path(".")) -> None:
    """Refuse data.chat_template for a tokenizer that has no chat template (models/prompts.py
    renders the chat). Validate runs it after check_model_source: the checkpoint is there."""
    if not data.chat_template:
        return
    from transformers import AutoTokenizer

    from cotflow.config_types import ConfigError

    src = str(Path(root) / name_or_path) if looks_local(name_or_path, root) else name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(src)
    except OSError as err:
        raise ConfigError(f"data.chat_template: cannot load the tokenizer of "
                          f"model.name_or_path {name_or_path!r}: {err}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"data.chat_template: the tokenizer of model.name_or_path "
                          f"{name_or_path!r} has no chat template; set data.chat_template: "
                          "false and write the whole prompt into data.prompt_template")


def load_policy(name_or_path: str | Path, *, for_training: bool = False) -> tuple[Any, Any]:
    """Load (model, tokenizer) with the Auto classes from a folder or a Hub id."""
    import torch
    from transformers import AutoModelForCausalLM

    src = _loadable(name_or_path)
    with _load_errors(src):
        tokenizer = _tokenizer(src)
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.train(for_training)
    return model, tokenizer


def tokenizer_and_context(cfg: Any) -> tuple[Any, int]:
    """The tokenizer and context length of `cfg.model` without its weights (what checking
    prompts against the context needs): as `build_tiny_policy` or `load_policy` and then
    `context_length` would give them."""
    src = cfg.model.name_or_path
    if src == "tiny":
        from models.tokenizer import build_char_tokenizer

        return build_char_tokenizer(), cfg.model.max_position_embeddings
    from transformers import AutoConfig

    check_model_source(src)  # a typed path: its own message
    with _load_errors(_loadable(src)):
        tokenizer = _tokenizer(src)
        config = AutoConfig.from_pretrained(src)
    return tokenizer, _context_of(config, cfg)


def _loadable(name_or_path: str | Path) -> str:
    src = str(name_or_path)
    if looks_local(src) and not (Path(src) / "config.json").is_file():
        # An artifact is missing until its stage runs; any other path was typed by someone.
        fix = ("run the stage that writes it (dvc repro)" if "artifacts" in Path(src).parts
               else "not a saved checkpoint; check the path in params.yaml")
        raise PolicyError(f"model path {src!r} has no config.json: {fix}")
    return src


@contextmanager
def _load_errors(src: str) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        raise PolicyError(f"cannot load model {src!r}: {str(err).splitlines()[0]} "
                          "(offline: download it first and give a local path)") from None


def _tokenizer(src: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def save_policy(model: Any, tokenizer: Any, path: Path) -> Path:
    """save_pretrained into `path` atomically (a temporary folder renamed into place)."""
    from cotflow.records import atomic_path

    with atomic_path(path, is_dir=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path


def context_length(model: Any, cfg: Any) -> int:
    """Tokens the loaded model can attend over (a Hub model's own, not the tiny model's knob)."""
    return _context_of(model.config, cfg)


def _context_of(config: Any, cfg: Any) -> int:
    return int(getattr(config, "max_position_embeddings", None)
               or cfg.model.max_position_embeddings)

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


def tokenizer_and_context(cfg: Any, src: str) -> tuple[Any, int]:
    """The tokenizer and context length of model `src` ("tiny", a folder or a Hub id; a
    stage's is models/source.py `source_model`) without its weights (what checking prompts
    against the context needs): as `build_tiny_policy` or `load_policy` and then
    `context_length` would give them."""
    if src == "tiny":
        from models.tokenizer import build_char_tokenizer

        return build_char_tokenizer(), cfg.model.max_position_embeddings
    from transformers import AutoConfig

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
        write_checkpoint(model, tokenizer, tmp)
    return path


def write_checkpoint(model: Any, tokenizer: Any, folder: Path) -> None:
    """save_pretrained the model and its tokenizer into `folder` (not atomic: save_policy)."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def context_length(model: Any, cfg: Any) -> int:
    """Tokens the loaded model can attend over (a Hub model's own, not the tiny model's knob)."""
    return _context_of(model.config, cfg)


def _context_of(config: Any, cfg: Any) -> int:
    return int(getattr(config, "max_position_embeddings", None)
               or cfg.model.max_position_embeddings)

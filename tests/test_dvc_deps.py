"""dvc.yaml lists, for every stage, the project code that stage runs: each module that
tasks/<stage>.py imports, directly or through others (lazy imports too), is under one of
the stage's deps. A module missing there would let `dvc repro` keep a stale artifact after
a code change."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from tasks.common import SAMPLING_STAGES

PACKAGES = ("cotflow", "models", "tasks")
# What only reports on a stage: logging to MLflow, how a failure is reported and the
# fault-injection points do not change an artifact, so a change there need not rerun anything.
NOT_RESULTS = {"cotflow/tracking.py", "cotflow/stage_errors.py"}
# tasks/common.py imports these only in stages that sample, to check the backend is there.
SAMPLING_CHECK = {"models/sampler.py", "models/server.py"}
# What refuses a run before any output is written changes no artifact either; the validate
# stage alone lists it (a new check reruns the validation).
CHECKS = {"models/backends.py"}


def module_file(name: str) -> Path | None:
    if name.split(".")[0] not in PACKAGES:
        return None
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(path: Path) -> set[Path]:
    """Project files `path` imports, anywhere in its body."""
    found: set[Path] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            file = module_file(name)
            if file is not None:
                found.add(file)
    return found


def closure(start: list[Path]) -> set[Path]:
    seen: set[Path] = set()
    todo = list(start)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.relative_to(ROOT).as_posix() in NOT_RESULTS:
            continue  # what only reporting imports (figures for MLflow) changes no artifact
        todo.extend(imported_files(path) - seen)
        if path.name != "__init__.py" and (path.parent / "__init__.py").is_file():
            todo.append(path.parent / "__init__.py")  # importing a module runs its package's
    return seen


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_deps_cover_the_code_it_runs(stage: str) -> None:
    spec = STAGES[stage].get("do", STAGES[stage])
    deps = [d for d in spec["deps"] if not d.startswith(("artifacts", "${"))]
    entry = ["validate.py"] if stage == "validate" else [f"{stage}.py", "common.py"]
    code = closure([ROOT / "tasks" / name for name in entry])
    exempt = set() if stage == "validate" else CHECKS
    missing = sorted(
        rel for rel in (p.relative_to(ROOT).as_posix() for p in code)
        if rel not in NOT_RESULTS | exempt and not rel.endswith("__init__.py")
        and (stage in SAMPLING_STAGES or stage == "validate" or rel not in SAMPLING_CHECK)
        and not any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps))
    assert not missing, f"dvc.yaml stage {stage}: deps lack {missing}"

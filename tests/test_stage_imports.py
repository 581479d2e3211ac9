"""Stages do not import stages (DESIGN.md): what two stages share lives below tasks/, in
models/ or cotflow/, so each stage's module is its own and dvc.yaml's deps stay exact."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

from tasks.common import ALL_STAGES

STAGE_MODULES = frozenset(f"tasks.{name}" for name in ALL_STAGES)


def imported_modules(source: str, package: str) -> set[str]:
    """Every module `source` imports, lazy imports inside functions included; for
    `from a import b` both `a` and `a.b` (b may be a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def test_the_check_sees_every_form_of_import() -> None:
    source = ("import tasks.verify\n"
              "def f():\n    from tasks.sample import draw\n"
              "def g():\n    from . import evaluate\n"
              "class C:\n    def h(self):\n        from tasks import judge as j\n")
    assert imported_modules(source, "tasks") & STAGE_MODULES == {
        "tasks.verify", "tasks.sample", "tasks.evaluate", "tasks.judge"}


PROJECT = sorted(p for folder in ("tasks", "models", "cotflow", "flows")
                 for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", PROJECT, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_imports_a_stage(path: Path) -> None:
    rel = path.relative_to(ROOT)
    own = ".".join(rel.with_suffix("").parts)
    package = ".".join(rel.parts[:-1])
    stages = imported_modules(path.read_text(), package) & STAGE_MODULES - {own}
    assert not stages, f"{rel} imports the stage(s) {sorted(stages)}: move what they share " \
                       "below tasks/ (models/ or cotflow/)"

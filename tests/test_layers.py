"""The import layers of DESIGN.md: engine knows nothing of the UI, the API or SQL; storage only of
the engine; the API and the TUI never import each other. Only the program's package, `stepflow` (its
command line and the composition root, stepflow/wiring.py), imports every layer, and no layer imports it.
SQL is storage's alone: no `sqlite3` anywhere else in the product (tests and bench may use it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: database drivers and toolkits: storage's alone
SQL = {"sqlite3", "sqlalchemy", "aiosqlite", "alembic"}
#: the program (stepflow/: its command line and the composition root), above every layer
PROGRAM = "stepflow"
FORBIDDEN = {
    "engine": {"textual", "aiohttp", "storage", "api_compat", "stepflow_tui", PROGRAM, *SQL},
    "storage": {"textual", "aiohttp", "api_compat", "stepflow_tui", PROGRAM},
    "api_compat": {"textual", "stepflow_tui", "storage", PROGRAM, *SQL},
    "stepflow_tui": {"api_compat", "storage", PROGRAM, *SQL},
    # the program may import every layer, but not SQL drivers itself: that is storage's work
    PROGRAM: set(SQL),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_import_only_downwards(package: str) -> None:
    offences = []
    for path in python_files(package):
        rel = path.relative_to(ROOT).as_posix()
        bad = imported_modules(path) & FORBIDDEN[package]
        if bad:
            offences.append(f"{rel} imports {', '.join(sorted(bad))}")
    assert not offences, "\n".join(offences)


def test_engine_is_importable_without_the_tui_or_the_api() -> None:
    code = (
        "import sys, engine.engine, engine.markers, engine.workflow.load\n"
        "bad = [m for m in ('textual', 'aiohttp', 'sqlalchemy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)

"""The import layers of DESIGN.md: engine knows nothing of the UI, the API or SQL; storage only of
the engine; the API and the TUI never import each other (only the composition root wires them).
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
FORBIDDEN = {
    "engine": {"textual", "aiohttp", "storage", "api_compat", "stepflow_tui", *SQL},
    "storage": {"textual", "aiohttp", "api_compat", "stepflow_tui"},
    "api_compat": {"textual", "stepflow_tui", "storage", *SQL},
    "stepflow_tui": {"api_compat", "storage", *SQL},
}
#: the composition root (the builders `stepflow`'s subcommands get every layer from) may import every layer
COMPOSITION_ROOT = {"stepflow_tui/cli/wiring.py"}


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
        if rel in COMPOSITION_ROOT:
            continue
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

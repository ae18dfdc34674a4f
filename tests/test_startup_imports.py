"""The read commands start fast (issue 16): `stepflow ls`, `show`, `logs`, `--help` and `--version`
import no asyncio, no SQLAlchemy (its asyncio engine, its ORM, Core itself: ~0.2 s to import), no
Alembic, no pydantic, no TUI, API or runner libraries, and not stepflow's engine: they read the file
with sqlite3 (storage.read_only). Each command runs in a subprocess of its own, which writes the
modules it imported when it exits; bench/startup.py measures the time.

`stepflow exec` runs an engine, but on a database at this stepflow's schema, or a new one, it too
imports no SQLAlchemy, Alembic, aiosqlite nor greenlet: the engine's store opens and writes through
sqlite3 (storage.connections), a new file gets its schema from storage/schema.sql, and SQLAlchemy's
async engine is made only for what `serve` and the TUI ask. Only an older file is migrated through
Alembic.

And what the lean read path must still do: read what a running engine writes (WAL), mark what a
dead engine left running as lost, refuse a database a newer stepflow wrote, migrate an older one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import read_until, spawn, wait_for_stored_line

ROOT = Path(__file__).resolve().parent.parent

#: what a read command must not import (a module or any module under it)
FORBIDDEN = (
    "asyncio", "sqlalchemy", "aiosqlite", "alembic", "greenlet", "pydantic", "textual", "aiohttp", "asyncssh",
    "docker", "yaml", "watchfiles", "psutil", "importlib.metadata",
    "engine.engine", "engine.events", "engine.markers", "engine.runners", "engine.execution", "engine.store",
    "storage.sqlite_store", "storage.connections", "storage.tables", "stepflow_tui.cli.output", "stepflow_tui.app",
)
#: modules a read command imports at most, all told (Python's own included): ~215 for `ls` when this
#: was written, ~530 before; the margin is for other Pythons' standard libraries
MAX_MODULES = 280

#: runs the CLI and writes sys.modules, one a line, to the file named by the first argument
_RUN = (
    "import sys\n"
    "out, sys.argv = sys.argv[1], ['stepflow', *sys.argv[2:]]\n"
    "try:\n"
    "    from stepflow.main import main\n"
    "    code = main()\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "with open(out, 'w') as f:\n"
    "    f.write('\\n'.join(sorted(sys.modules)))\n"
    "raise SystemExit(code)\n"
)


def stepflow(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
    env.pop("STEPFLOW_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-m", "stepflow.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def modules_of(data: Path, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    out = tmp_path / "modules.txt"
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
    env.pop("STEPFLOW_LOG_LEVEL", None)
    result = subprocess.run([sys.executable, "-c", _RUN, str(out), *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    return result, out.read_text().splitlines()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data directory holding one finished execution with a few lines of output; its id."""
    data = tmp_path_factory.mktemp("history")
    done = stepflow(data, "exec", "--plain", "--shell", "--", "echo one; echo STEP_START:build; echo two")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(stepflow(data, "ls", "--json").stdout)
    return data, row["id"]


@pytest.mark.parametrize("args", [["ls"], ["ls", "--json"], ["show", "ID"], ["show", "ID", "--json"],
                                  ["logs", "ID"], ["logs", "ID", "-t"], ["--help"], ["--version"], ["ls", "--help"]],
                         ids=" ".join)
def test_a_read_command_imports_no_engine_nor_sqlalchemy(history: tuple[Path, str], tmp_path: Path,
                                                         args: list[str]) -> None:
    data, execution_id = history
    result, modules = modules_of(data, tmp_path, *[execution_id[:8] if a == "ID" else a for a in args])
    assert result.returncode == 0, result.stderr
    if args[0] == "logs":
        assert result.stdout.splitlines()[-1].endswith("two")
    forbidden = FORBIDDEN
    if args == ["--version"]:  # an editable install (this one) keeps its record where only it finds it
        forbidden = tuple(f for f in FORBIDDEN if f != "importlib.metadata")
    if args[0] != "show" and args != ["ls"]:  # rich lays out the tables of `ls` and `show` only
        forbidden += ("rich",)
    bad = sorted(m for m in modules if m.startswith(tuple(f"{f}." for f in forbidden)) or m in forbidden)
    assert not bad, f"stepflow {' '.join(args)} imported {', '.join(bad)}"
    assert len(modules) <= MAX_MODULES, f"stepflow {' '.join(args)} imported {len(modules)} modules"


#: what `stepflow exec` must not import, on a database at this stepflow's schema
EXEC_FORBIDDEN = ("sqlalchemy", "aiosqlite", "alembic", "greenlet", "pydantic", "textual", "aiohttp", "asyncssh",
                  "docker", "yaml", "storage.tables", "stepflow_tui.app", "api_compat",
                  # what other commands use, made or imported at its first use: the executr jobs and
                  # the worker targets' pool, the queue's adoption (a one-shot exec adopts nothing),
                  # workflow planning, the records and statements of OpsConductor, the work queue and the
                  # registry
                  "engine.jobs", "engine.job_live", "engine.job_output", "engine.runners.worker", "engine.adoption",
                  "engine.workflow", "engine.store.opsconductor", "storage.opsconductor_sql", "engine.store.queue",
                  "storage.queue_sql", "engine.store.registry", "storage.registry_sql")


def forbidden_in(modules: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.startswith(tuple(f"{f}." for f in forbidden)) or m in forbidden)


def test_exec_imports_no_sqlalchemy_and_stores_its_execution(history: tuple[Path, str], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "stepflow.db").write_bytes((history[0] / "stepflow.db").read_bytes())
    result, modules = modules_of(data, tmp_path, "exec", "--plain", "--", "true")
    assert result.returncode == 0, result.stderr
    bad = forbidden_in(modules, EXEC_FORBIDDEN)
    assert not bad, f"stepflow exec imported {', '.join(bad)}"
    with sqlite3.connect(data / "stepflow.db") as db:
        rows = db.execute("SELECT command, status, exit_code FROM executions ORDER BY created_at").fetchall()
    db.close()
    assert rows[-1] == ("true", "completed", 0)
    assert len(rows) == 2  # the history's and this one


def test_exec_makes_a_new_database_and_brings_an_older_one_to_this_schema(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from storage.schema import HEAD, MIGRATIONS

    fresh = tmp_path / "new" / "data"
    result, modules = modules_of(fresh, tmp_path, "exec", "--plain", "--", "true")
    assert result.returncode == 0, result.stderr
    # a new file's schema is plain SQL run by sqlite3 (storage/schema.sql)
    bad = forbidden_in(modules, EXEC_FORBIDDEN)
    assert not bad, f"stepflow exec on a new data directory imported {', '.join(bad)}"
    older = tmp_path / "older"
    older.mkdir()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{older / 'stepflow.db'}")
    command.upgrade(config, "0003")
    result = stepflow(older, "exec", "--plain", "--", "true")
    assert result.returncode == 0, result.stderr
    for data in (fresh, older):
        with sqlite3.connect(data / "stepflow.db") as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
            assert db.execute("SELECT status FROM executions").fetchall() == [("completed",)]
        db.close()


def test_exec_refuses_a_database_of_a_newer_stepflow_in_one_line(history: tuple[Path, str], tmp_path: Path) -> None:
    data = newer_database(history[0], tmp_path)
    result = stepflow(data, "exec", "--plain", "--", "true")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"stepflow: the database {data / 'stepflow.db'} has schema revision '9999'")
    with sqlite3.connect(data / "stepflow.db") as db:
        assert db.execute("SELECT count(*) FROM executions").fetchall() == [(1,)]  # nothing run
    db.close()


def test_reads_see_what_a_running_engine_wrote_and_mark_a_dead_one_lost(tmp_path: Path) -> None:
    proc = spawn(tmp_path, "exec", "--plain", "-v", "--shell", "--", "echo first-line; echo ready; sleep 60")
    try:
        read_until(proc, "ready")
        wait_for_stored_line(tmp_path / "stepflow.db", "ready")
        # the engine holds its transaction open at most ~100 ms; the reader sees what it committed
        listed = stepflow(tmp_path, "ls", "--json")
        assert listed.returncode == 0, listed.stderr
        [running] = json.loads(listed.stdout)
        assert running["status"] == "running"  # its engine lives: not marked lost
        logs = stepflow(tmp_path, "logs", running["id"][:8])
        assert logs.stdout.splitlines() == ["first-line", "ready"]
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # its engine died: the next read marks it lost, as the engine's own start would
    listed = stepflow(tmp_path, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    [lost] = json.loads(listed.stdout)
    assert (lost["status"], lost["abort_reason"]) == ("failed", "engine lost")
    assert "Traceback" not in listed.stderr


def test_a_database_of_a_newer_stepflow_is_refused_in_one_line(history: tuple[Path, str], tmp_path: Path) -> None:
    data = newer_database(history[0], tmp_path)
    for args in (["ls"], ["show", history[1]], ["logs", history[1]]):
        result = stepflow(data, *args)
        assert result.returncode == 1
        [line] = result.stderr.splitlines()
        assert line.startswith(f"stepflow: the database {data / 'stepflow.db'} has schema revision '9999'")
        assert "newer stepflow" in line
    # and left as it was
    with sqlite3.connect(data / "stepflow.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("9999",)]
    db.close()


def test_a_read_command_brings_an_older_database_to_this_schema(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    from storage.schema import HEAD, MIGRATIONS

    path = tmp_path / "stepflow.db"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    command.upgrade(config, "0003")
    result = stepflow(tmp_path, "ls")
    assert result.returncode == 0, result.stderr
    assert "no executions yet" in result.stderr
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    db.close()
    # and the next one reads it as it is, without SQLAlchemy
    result, modules = modules_of(tmp_path, tmp_path, "ls")
    assert result.returncode == 0
    assert "sqlalchemy" not in modules


def test_a_first_read_command_makes_the_database(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    result, modules = modules_of(data, tmp_path, "ls")
    assert result.returncode == 0, result.stderr
    assert "no executions yet" in result.stderr
    assert (data / "stepflow.db").exists()
    # made with sqlite3 alone, as `exec` makes it
    bad = forbidden_in(modules, FORBIDDEN)
    assert not bad, f"stepflow ls on a new data directory imported {', '.join(bad)}"


def newer_database(data: Path, tmp_path: Path) -> Path:
    """A copy of `data`'s database, stamped with a schema revision of a newer stepflow."""
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "stepflow.db").write_bytes((data / "stepflow.db").read_bytes())
    with sqlite3.connect(newer / "stepflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.close()
    return newer

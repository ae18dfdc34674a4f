"""A new file's schema is plain SQL (storage/schema.sql) run by sqlite3: it must be what SQLAlchemy's
`create_all` makes of storage/tables.py, stamped at HEAD, statement for statement; and processes
opening one new file at once make it once. (tests/test_storage.py checks that this schema is the one
the migrations build; tests/test_startup_imports.py that making it imports no SQLAlchemy.)"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine

from storage import database_path, schema_sql
from storage.schema import HEAD, bring_file_to_head

ROOT = Path(__file__).resolve().parent.parent

REGENERATE = ("storage/schema.sql is not what storage/tables.py makes: write it again with "
              "`python -m storage.schema_sql` (and commit it)")


def schema_rows(path: Path) -> dict[str, object]:
    """sqlite_master's rows (type, name, tbl_name, sql) by type and name, the file's user_version and
    its alembic_version."""
    db = sqlite3.connect(path)
    try:
        return {
            "sqlite_master": db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                                        "ORDER BY type, name").fetchall(),
            "user_version": db.execute("PRAGMA user_version").fetchall(),
            "alembic_version": db.execute("SELECT version_num FROM alembic_version").fetchall(),
        }
    finally:
        db.close()


def test_a_new_file_has_the_schema_create_all_makes_stamped_at_head(tmp_path: Path) -> None:
    reference = tmp_path / "create_all.db"
    engine = create_engine(f"sqlite:///{reference}")
    try:
        with engine.begin() as conn:
            schema_sql.create_reference(conn)
            conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (HEAD,))
    finally:
        engine.dispose()
    new = tmp_path / "new.db"
    bring_file_to_head(new)
    made, wanted = schema_rows(new), schema_rows(reference)
    assert made["alembic_version"] == wanted["alembic_version"] == [(HEAD,)]
    assert made["user_version"] == wanted["user_version"]
    # row for row, so that a missing or changed table, index or trigger is named
    made_rows, wanted_rows = made["sqlite_master"], wanted["sqlite_master"]
    assert isinstance(made_rows, list) and isinstance(wanted_rows, list)
    assert {r[:2] for r in made_rows} == {r[:2] for r in wanted_rows}, REGENERATE
    for got, want in zip(made_rows, wanted_rows, strict=True):
        assert got == want, REGENERATE
    assert len(made_rows) > 40  # the tables, their indexes and the triggers: not an empty match


def test_the_stored_sql_is_the_one_generated_from_the_tables() -> None:
    """Also its order and comments: a hand edit is overwritten at the next generation."""
    assert schema_sql.SQL_FILE.read_text(encoding="utf-8") == schema_sql.render(), REGENERATE


def test_processes_opening_one_new_data_directory_at_once_all_run(tmp_path: Path) -> None:
    """Each makes the file or finds it made (BEGIN IMMEDIATE: one of them creates the schema), none
    fails; every execution is stored."""
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path / "data")}
    env.pop("STEPFLOW_LOG_LEVEL", None)
    procs = [subprocess.Popen([sys.executable, "-m", "stepflow.main", "exec", "--plain", "--", "true"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    for proc in procs:
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    db = sqlite3.connect(database_path(tmp_path / "data"))
    try:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
        assert db.execute("SELECT status, count(*) FROM executions GROUP BY status").fetchall() == [("completed", 4)]
    finally:
        db.close()


def test_statements_are_split_where_each_is_complete() -> None:
    """A trigger's body holds semicolons of its own; a statement's text is kept whole, blank lines and
    trailing spaces included (they are part of what sqlite_master holds)."""
    text = ("-- a comment\n\nCREATE TABLE t (\n\ta INTEGER, \n\tb TEXT\n)\n WITHOUT ROWID\n\n;\n\n"
            "CREATE TRIGGER t_follows AFTER UPDATE ON t BEGIN UPDATE t SET b = 'x;y'; DELETE FROM t; END;\n")
    assert schema_sql.statements(text) == [
        "CREATE TABLE t (\n\ta INTEGER, \n\tb TEXT\n)\n WITHOUT ROWID\n\n",
        "CREATE TRIGGER t_follows AFTER UPDATE ON t BEGIN UPDATE t SET b = 'x;y'; DELETE FROM t; END",
    ]

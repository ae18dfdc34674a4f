"""A new file's schema as plain SQL, storage/schema.sql, which sqlite3 runs alone (storage.schema):
importing SQLAlchemy to build the tables of storage/tables.py with `metadata.create_all` cost ~0.2 s
of CPU, more than `stepflow exec`'s whole start on an existing file (issue 16).

storage/schema.sql is what `create_all` writes for SQLite (the tables, their indexes, the triggers
tables.py adds on its DDL events) and then the alembic_version table, statement for statement; the
file is stamped with storage.schema.HEAD after it. It is generated, not written by hand: when
tables.py changes (with its migration), write it again with

    python -m storage.schema_sql

(`--print` prints it instead). tests/test_new_schema.py fails until then: it makes one file with
`create_all` and one with this SQL and compares their schemas.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection

SQL_FILE = Path(__file__).resolve().with_name("schema.sql")

#: the table Alembic keeps a file's revision in, as storage.schema has always made it for a new file
ALEMBIC_VERSION = ("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                   "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")

_HEADER = """\
-- The schema of a new stepflow database: what SQLAlchemy's `metadata.create_all` writes for the tables
-- of storage/tables.py, then the alembic_version table (storage.schema stamps it with HEAD).
-- Generated: do not edit. When tables.py changes, write it again with `python -m storage.schema_sql`.

"""


def statements(text: str | None = None) -> list[str]:
    """The statements of storage/schema.sql (or of `text`), each as `create_all` wrote it: the text
    SQLite keeps in sqlite_master. A statement ends at the line where it is complete (a trigger's
    body holds semicolons of its own); comments between statements are skipped."""
    if text is None:
        text = SQL_FILE.read_text(encoding="utf-8")
    found: list[str] = []
    pending = ""
    for line in text.splitlines(keepends=True):
        if not pending and (not line.strip() or line.startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.rstrip("\n").removesuffix(";"))
            pending = ""
    if pending.strip():
        raise ValueError(f"{SQL_FILE} ends in an incomplete statement: {pending[:80]!r}")
    return found


def create_reference(conn: Connection) -> None:
    """The schema as SQLAlchemy makes it (what storage/schema.sql must hold): the tables of
    storage/tables.py with `create_all`, and the alembic_version table."""
    from storage.tables import metadata

    metadata.create_all(conn)
    conn.exec_driver_sql(ALEMBIC_VERSION)


def render() -> str:
    """storage/schema.sql's text, from the tables of storage/tables.py: `create_reference` on an
    in-memory database, its statements read back from sqlite_master. Each table's indexes follow it
    sorted by name (SQLAlchemy creates them in no fixed order), the triggers come last."""
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            create_reference(conn)
            rows = conn.exec_driver_sql(
                "SELECT type, name, tbl_name, sql FROM sqlite_master "
                "WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid"
            ).all()
    finally:
        engine.dispose()
    ordered: list[str] = []
    for kind, name, _table, sql in rows:
        if kind == "table":
            ordered.append(sql)
            ordered += [s for k, _n, t, s in sorted(rows, key=lambda r: r[1]) if k == "index" and t == name]
    ordered += [sql for kind, _name, _table, sql in rows if kind not in ("table", "index")]
    if len(ordered) != len(rows):
        raise RuntimeError("storage.schema_sql.render: an index or view of sqlite_master was not placed")
    return _HEADER + "".join(f"{sql};\n\n" for sql in ordered)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args == ["--print"]:
        sys.stdout.write(text)
    elif not args:
        SQL_FILE.write_text(text, encoding="utf-8")
        print(f"wrote {SQL_FILE} ({len(statements(text))} statements)")
    else:
        print("usage: python -m storage.schema_sql [--print]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

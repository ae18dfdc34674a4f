"""Bringing a file to this stepflow's schema, at open: Alembic only when there is something to migrate.

Importing Alembic costs ~0.35 s, a third of `stepflow exec`'s start-up. Most opens find the file at
the newest revision (one SELECT tells); a new, empty file gets the tables of storage/tables.py with
`create_all` and is stamped with the newest revision, which is what Alembic's documentation advises
for a new database (a test checks that this schema is the one the migrations build). Any other file
goes through `alembic upgrade head`, unless its revision is none this stepflow knows: a newer one
wrote it, and it is refused with `SchemaTooNew` rather than touched.

SQLAlchemy is imported by the functions that use it: the CLI's read commands (storage.read_only) and
the engine's store (storage.connections) check the revision with sqlite3 alone and come here only to
migrate.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import EngineError

if TYPE_CHECKING:
    from sqlalchemy import Connection

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: the newest revision in storage/migrations/versions (a test checks it is Alembic's head)
HEAD = "0005"
#: tries at making or migrating a file another process is making too: ~1 s in all
_OPEN_ATTEMPTS = 10


class SchemaTooNew(EngineError, RuntimeError):
    """The file's schema is of a revision this stepflow does not know: a newer stepflow wrote it.
    (An EngineError: the CLI prints its message alone; a RuntimeError, as opening such a file was.)"""

    title = "Database too new"


def known_revisions() -> set[str]:
    """The revisions of the migrations shipped here (each file is named `NNNN_what.py`)."""
    return {p.name.partition("_")[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py")}


def check_known(version: str | None, path: Path) -> None:
    """Raise SchemaTooNew when `version` (the file's alembic_version) is one no migration here has."""
    if version is not None and version != HEAD and version not in known_revisions():
        raise SchemaTooNew(f"the database {path} has schema revision {version!r}, which this stepflow "
                           f"(up to {HEAD}) does not know: a newer stepflow wrote it; use that one, or "
                           f"another data directory (--data-dir)")


def stored_revision(conn: sqlite3.Connection) -> str | None:
    """The file's alembic_version (None: none, a new file), on a sqlite3 connection."""
    try:
        versions = [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return None
    return versions[0] if len(versions) == 1 else None


def bring_to_head(conn: Connection, path: Path) -> None:
    """Run inside the caller's write transaction (BEGIN IMMEDIATE): two processes opening one new
    file do not both create the schema."""
    from sqlalchemy import text

    names = {row[0] for row in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "alembic_version" in names:
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
        if versions == [HEAD]:
            return
        if len(versions) == 1:
            check_known(versions[0], path)
    elif not names:
        from storage.tables import metadata

        metadata.create_all(conn)
        conn.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": HEAD})
        return
    migrate(conn, path)


def bring_file_to_head(path: Path) -> None:
    """`bring_to_head` on its own synchronous SQLAlchemy connection (no asyncio): what a read-only
    command, or the engine's store, does when it finds a new or older file, once."""
    import time

    from sqlalchemy import URL, create_engine
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    from storage import pragmas

    engine = create_engine(URL.create("sqlite", database=str(path)), poolclass=NullPool)
    pragmas.install(engine)
    try:
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                with engine.execution_options(**{pragmas.WRITE: True}).begin() as conn:
                    bring_to_head(conn, path)
                return
            except OperationalError as exc:
                # another process making the same new file: switching it to WAL is refused at once
                # ("locked"); a moment later it is in WAL (as storage.connections does)
                if "locked" not in str(exc) or attempt == _OPEN_ATTEMPTS - 1:
                    raise
                time.sleep(0.02 * (attempt + 1))
    finally:
        engine.dispose()


def migrate(conn: Connection, path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.util.exc import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = conn
    try:
        command.upgrade(config, "head")
    except CommandError as exc:
        # most likely a revision this version does not know: a newer stepflow wrote the file
        raise RuntimeError(f"cannot bring the database {path} to this stepflow's schema: {exc}") from exc

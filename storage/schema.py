"""Bringing a file to this stepflow's schema, at open: Alembic only when there is something to migrate.

Importing Alembic costs ~0.35 s, SQLAlchemy's Core ~0.2 s: more than `stepflow exec`'s whole start.
Most opens find the file at the newest revision (one SELECT tells). A new, empty file gets the
schema of storage/schema.sql (storage.schema_sql: what `create_all` writes for the tables of
storage/tables.py) with sqlite3 alone, and is stamped with the newest revision, which is what
Alembic's documentation advises for a new database (tests check that this schema is the one
`create_all` and the migrations build). Any other file goes through `alembic upgrade head`, unless
its revision is none this stepflow knows: a newer one wrote it, and it is refused with
`SchemaTooNew` rather than touched.

SQLAlchemy and Alembic are imported by the functions that migrate: the CLI's read commands
(storage.read_only) and the engine's store (storage.connections) check the revision with sqlite3
and come here for a new or older file (`bring_file_to_head`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from engine.errors import EngineError
from storage import pragmas, schema_sql

if TYPE_CHECKING:
    from sqlalchemy import Connection

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: the newest revision in storage/migrations/versions (a test checks it is Alembic's head)
HEAD = "0005"
#: tries at making or migrating a file another process is making too: ~1 s in all
_OPEN_ATTEMPTS = 10

T = TypeVar("T")


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


def create_schema(conn: sqlite3.Connection) -> None:
    """The schema of storage/schema.sql on an empty file, stamped with HEAD, inside the caller's
    write transaction (statement by statement: sqlite3's executescript would commit it first)."""
    for statement in schema_sql.statements():
        conn.execute(statement)
    conn.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (HEAD,))


def bring_new_file_to_head(conn: sqlite3.Connection, path: Path) -> bool:
    """With sqlite3 alone, in one write transaction (BEGIN IMMEDIATE: two processes opening one new
    file do not both create the schema): an empty file gets the schema (`create_schema`). Whether
    the file is at HEAD now; False: it is an older one, to migrate. SchemaTooNew for a newer one."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' LIMIT 1").fetchone() is None:
            create_schema(conn)
            conn.execute("COMMIT")
            return True
        version = stored_revision(conn)
        check_known(version, path)
        return version == HEAD
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def bring_file_to_head(path: Path) -> None:
    """What a read-only command, or the engine's store, does once when it finds a new or older file
    (no asyncio): a new one gets its schema with sqlite3 (`bring_new_file_to_head`), an older one is
    migrated through SQLAlchemy and Alembic (`migrate_file`)."""
    def at_head() -> bool:
        conn = pragmas.connect(path)
        try:
            return bring_new_file_to_head(conn, path)
        finally:
            conn.close()

    if not _retried(at_head, sqlite3.OperationalError):
        migrate_file(path)


def migrate_file(path: Path) -> None:
    """`bring_to_head` on its own synchronous SQLAlchemy connection."""
    from sqlalchemy import URL, create_engine
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.pool import NullPool

    engine = create_engine(URL.create("sqlite", database=str(path)), poolclass=NullPool)
    pragmas.install(engine)

    def migrated() -> None:
        with engine.execution_options(**{pragmas.WRITE: True}).begin() as conn:
            bring_to_head(conn, path)

    try:
        _retried(migrated, OperationalError)
    finally:
        engine.dispose()


def _retried(fn: Callable[[], T], locked: type[Exception]) -> T:
    """`fn()`, again a moment later while it fails with SQLite's "locked": another process making
    the same new file, whose switch to WAL is refused at once (a moment later it is in WAL, as
    storage.connections finds too)."""
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return fn()
        except locked as exc:
            if "locked" not in str(exc) or attempt == _OPEN_ATTEMPTS - 1:
                raise
            time.sleep(0.02 * (attempt + 1))
    raise AssertionError("unreachable")


def bring_to_head(conn: Connection, path: Path) -> None:
    """Run inside the caller's write transaction (BEGIN IMMEDIATE), on SQLAlchemy's connection: the
    file is migrated (`migrate`) unless another process brought it to HEAD meanwhile. (A new file is
    made by `bring_new_file_to_head`; if one came here, Alembic would build it from nothing.)"""
    names = {row[0] for row in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "alembic_version" in names:
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
        if versions == [HEAD]:
            return
        if len(versions) == 1:
            check_known(versions[0], path)
    migrate(conn, path)


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

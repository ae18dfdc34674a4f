"""Bringing a file to this stepflow's schema, at open: Alembic only when there is something to migrate.

Importing Alembic costs ~0.35 s, a third of `stepflow exec`'s start-up. Most opens find the file at
the newest revision (one SELECT tells); a new, empty file gets the tables of storage/tables.py with
`create_all` and is stamped with the newest revision, which is what Alembic's documentation advises
for a new database (a test checks that this schema is the one the migrations build). Any other file
goes through `alembic upgrade head`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, text

from storage.tables import metadata

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: the newest revision in storage/migrations/versions (a test checks it is Alembic's head)
HEAD = "0005"


def bring_to_head(conn: Connection, path: Path) -> None:
    """Run inside the caller's write transaction (BEGIN IMMEDIATE): two processes opening one new
    file do not both create the schema."""
    names = {row[0] for row in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "alembic_version" in names:
        if conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all() == [HEAD]:
            return
    elif not names:
        metadata.create_all(conn)
        conn.exec_driver_sql(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": HEAD})
        return
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

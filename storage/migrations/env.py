"""Alembic environment. At run time `SqliteStore.open()` runs the migrations on its own connection
(passed in `config.attributes["connection"]`, inside a BEGIN IMMEDIATE transaction, so two
processes opening a new file do not both create the schema).

For developers writing a migration:
    .venv/bin/alembic -c storage/alembic.ini revision --autogenerate -m "what changes"
which compares the tables in storage/tables.py with the database named in storage/alembic.ini.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine

from storage.tables import metadata


def _run(connection: Connection) -> None:
    # render_as_batch: SQLite alters most things by copying the table; batch mode writes that out
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("stepflow's migrations run online only (SqliteStore.open() runs them)")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if context.config.config_file_name:
        fileConfig(context.config.config_file_name)
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


main()

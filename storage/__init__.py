"""SQLite storage for stepflow: the engine's `Store` over SQLAlchemy (async, aiosqlite), in WAL mode,
with its schema kept by Alembic migrations shipped in this package."""

from storage.paths import artifacts_dir, database_path, default_data_dir
from storage.sqlite_store import SqliteStore

__all__ = ["SqliteStore", "artifacts_dir", "database_path", "default_data_dir"]

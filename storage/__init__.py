"""SQLite storage for stepflow: the engine's `Store`, in WAL mode, with its schema kept by Alembic
migrations shipped in this package (sqlite3 for what an engine does, SQLAlchemy's async engine made
for the rest when first asked: see storage.connections); and `storage.read_only`, the reads of the
CLI's read commands over sqlite3 alone (no SQLAlchemy, no asyncio: they start in milliseconds).

`SqliteStore` is imported when first asked for: importing this package costs nothing of SQLAlchemy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from storage.paths import artifacts_dir, database_path, default_data_dir

if TYPE_CHECKING:
    from storage.sqlite_store import SqliteStore

__all__ = ["SqliteStore", "artifacts_dir", "database_path", "default_data_dir"]


def __getattr__(name: str) -> Any:
    if name == "SqliteStore":
        from storage.sqlite_store import SqliteStore

        return SqliteStore
    raise AttributeError(f"module 'storage' has no attribute {name!r}")

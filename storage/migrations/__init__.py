"""Alembic migrations of the stepflow database; run by `SqliteStore.open()`."""

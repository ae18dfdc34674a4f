"""The upserts of a batch's snapshots (storage.writes) as plain SQL, made from the tables' columns
(storage.columns) without SQLAlchemy: `stepflow exec` writes its batches without importing it
(~0.2 s, the whole of its start-up budget, issue 16). The text is the one SQLAlchemy's SQLite
dialect writes for `insert(table).on_conflict_do_update(...)` (tests/test_storage.py compares them).
"""

from __future__ import annotations

from collections.abc import Sequence


def upsert_sql(table: str, columns: Sequence[str], where: str | None = None) -> str:
    """`INSERT … ON CONFLICT (id) DO UPDATE SET` every column but `pk` and `id` to the new row's,
    `where` the guard (None: always), for rows of `columns` in that order."""
    changed = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("pk", "id"))
    sql = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
           f"ON CONFLICT (id) DO UPDATE SET {changed}")
    return sql if where is None else f"{sql} WHERE {where}"

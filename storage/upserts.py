"""The upserts of a batch's snapshots (storage.writes) as plain SQL, made from the tables' columns
(storage.columns) without SQLAlchemy: `stepflow exec` writes its batches without importing it
(~0.2 s, the whole of its start-up budget, issue 16). The text is the one SQLAlchemy's SQLite
dialect writes for `insert(table).on_conflict_do_update(...)` (tests/test_storage.py compares them).
"""

from __future__ import annotations

from collections.abc import Sequence


def upsert_sql(table: str, columns: Sequence[str], where: str | None = None, *, from_json: bool = False) -> str:
    """`INSERT … ON CONFLICT (id) DO UPDATE SET` every column but `pk` and `id` to the new row's,
    `where` the guard (None: always), for rows of `columns` in that order. `from_json`: the rows
    come as one parameter, a JSON array of them (`rows_from_json`)."""
    changed = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("pk", "id"))
    rows = rows_from_json(len(columns)) if from_json else f"VALUES ({', '.join('?' * len(columns))})"
    sql = f"INSERT INTO {table} ({', '.join(columns)}) {rows} ON CONFLICT (id) DO UPDATE SET {changed}"
    return sql if where is None else f"{sql} WHERE {where}"


def rows_from_json(width: int) -> str:
    """A SELECT of the rows of `width` values held in the statement's one parameter as a JSON array
    of arrays, in their order. SQLite unpacks them in one call, without Python's GIL (storage.writes).
    `WHERE true`: SQLite's documented way to let an upsert follow an INSERT … SELECT."""
    values = ", ".join(f"value ->> {i}" for i in range(width))
    return f"SELECT {values} FROM json_each(?1) WHERE true"

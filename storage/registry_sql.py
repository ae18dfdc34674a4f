"""Counters and the registry (engine.store.registry) in SQLite: what `storage.registry.SqliteRegistry`
does, imported at its first call (`stepflow exec` never makes one).

A counter's next value is one upsert, `INSERT … ON CONFLICT DO UPDATE SET value = value + 1
RETURNING value`, inside BEGIN IMMEDIATE: no two transactions, in any process, read the same value.
A registry entry's serial comes from that statement in the transaction that inserts the entry, so an
insert that fails (a name taken) rolls the counter back with it: serials have no gaps.

Each write is a row or two by an index: inline, on the loop's thread (storage.inline_writes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.errors import Conflict
from engine.model import utcnow
from engine.store.registry import RegistryEntry, Serial
from storage import columns
from storage.columns import to_iso
from storage.rows import RowMap, json_text

if TYPE_CHECKING:
    from storage.registry import SqliteRegistry

REGISTRY = RowMap(RegistryEntry, columns.REGISTRY)

_NEXT_VALUE = (
    "INSERT INTO counters (name, value) VALUES (?, 1) "
    "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
)
_RETURNING = f"RETURNING {REGISTRY.returning}"
_REGISTER = (
    "INSERT INTO registry (kind, serial, name, data, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
    f"{_RETURNING}"
)
# RFC 7396 merge patch: nested objects merge, a null removes the key
_UPDATE = f"UPDATE registry SET data = json_patch(data, ?), updated_at = ? WHERE kind = ? AND id = ? {_RETURNING}"
_SELECT = f"SELECT {REGISTRY.select} FROM registry"


# -- SqliteRegistry's methods (storage.registry), the store first ----------------------------------------
async def next_value(store: SqliteRegistry, name: str) -> int:
    return await store._write_inline(_next_value, name)


async def register(store: SqliteRegistry, kind: str, name: str, data: Mapping[str, Any] | None = None, *,
                   serial: Serial | None = None) -> RegistryEntry:
    now = to_iso(utcnow())
    taken: list[str | None] = [None]

    def insert(conn: sqlite3.Connection) -> RegistryEntry:
        text = taken[0] = None if serial is None else serial.format(_next_value(conn, serial.counter))
        row = conn.execute(_REGISTER, (kind, text, name, json_text(dict(data or {})), now, now)).fetchone()
        return REGISTRY.from_values(row)

    try:
        return await store._write_inline(insert)
    except sqlite3.IntegrityError as exc:
        # the transaction is rolled back, the counter's increment with it
        if "registry.serial" in str(exc):
            raise Conflict(f"the serial {taken[0]} is taken") from exc
        raise Conflict(f"there is already a {kind} named {name!r}") from exc


async def get_registered(store: SqliteRegistry, kind: str, *, id: int | None = None, serial: str | None = None,
                         name: str | None = None) -> RegistryEntry | None:
    given = [(column, value) for column, value in (("id", id), ("serial", serial), ("name", name))
             if value is not None]
    if len(given) != 1:
        raise ValueError("get_registered takes exactly one of id, serial or name")
    return await store._reader.run(_get, kind, *given[0], inline=True)


async def list_registered(store: SqliteRegistry,
                          kind: str, *, limit: int = 100, offset: int = 0) -> tuple[list[RegistryEntry], int]:
    return await store._reader.run(_list, kind, limit, offset, snapshot=True, inline=True)


async def update_registered(store: SqliteRegistry,
                            kind: str, id: int, data: Mapping[str, Any]) -> RegistryEntry | None:
    return await store._write_inline(_update, (json_text(dict(data)), to_iso(utcnow()), kind, id))


async def unregister(store: SqliteRegistry, kind: str, id: int) -> bool:
    return await store._write_inline(_delete, kind, id)


# -- writes, inline (storage.inline_writes) ---------------------------------------------------------------
def _next_value(conn: sqlite3.Connection, name: str) -> int:
    return int(conn.execute(_NEXT_VALUE, (name,)).fetchone()[0])


def _update(conn: sqlite3.Connection, params: tuple[Any, ...]) -> RegistryEntry | None:
    row = conn.execute(_UPDATE, params).fetchone()
    return None if row is None else REGISTRY.from_values(row)


def _delete(conn: sqlite3.Connection, kind: str, id: int) -> bool:
    return conn.execute("DELETE FROM registry WHERE kind = ? AND id = ?", (kind, id)).rowcount > 0


# -- reads, on a reader connection (storage.reads) ------------------------------------------------------
def _get(conn: sqlite3.Connection, kind: str, column: str, value: object) -> RegistryEntry | None:
    row = conn.execute(f"{_SELECT} WHERE kind = ? AND {column} = ?", (kind, value)).fetchone()
    return None if row is None else REGISTRY.from_values(row)


def _list(conn: sqlite3.Connection, kind: str, limit: int, offset: int) -> tuple[list[RegistryEntry], int]:
    limit, offset = max(limit, 0), max(offset, 0)
    rows = conn.execute(f"{_SELECT} WHERE kind = ? ORDER BY id LIMIT ? OFFSET ?", (kind, limit, offset)).fetchall()
    if offset == 0 and len(rows) < limit:
        total = len(rows)
    else:
        total = conn.execute("SELECT count(*) FROM registry WHERE kind = ?", (kind,)).fetchone()[0]
    return [REGISTRY.from_values(r) for r in rows], total

"""Counters and the registry (engine.store.registry) in SQLite.

A counter's next value is one upsert, `INSERT … ON CONFLICT DO UPDATE SET value = value + 1
RETURNING value`, inside BEGIN IMMEDIATE: no two transactions, in any process, read the same value.
A registry entry's serial comes from that statement in the transaction that inserts the entry, so an
insert that fails (a name taken) rolls the counter back with it: serials have no gaps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from engine.errors import Conflict
from engine.model import utcnow
from engine.store.registry import RegistryEntry, Serial
from storage.connections import Connections
from storage.rows import RowMap, json_text
from storage.tables import registry, to_iso

REGISTRY = RowMap(RegistryEntry, registry)

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


async def _next_value(conn: AsyncConnection, name: str) -> int:
    return int((await conn.exec_driver_sql(_NEXT_VALUE, (name,))).scalar_one())


class SqliteRegistry(Connections):
    # -- counters ------------------------------------------------------------------------------------
    async def next_value(self, name: str) -> int:
        async with self._write() as conn:
            return await _next_value(conn, name)

    # -- registry ------------------------------------------------------------------------------------
    async def register(self, kind: str, name: str, data: Mapping[str, Any] | None = None, *,
                       serial: Serial | None = None) -> RegistryEntry:
        now = to_iso(utcnow())
        text: str | None = None
        try:
            async with self._write() as conn:
                text = None if serial is None else serial.format(await _next_value(conn, serial.counter))
                row = (await conn.exec_driver_sql(
                    _REGISTER, (kind, text, name, json_text(dict(data or {})), now, now))).one()
        except IntegrityError as exc:
            # the transaction is rolled back, the counter's increment with it
            if "registry.serial" in str(exc.orig):
                raise Conflict(f"the serial {text} is taken") from exc
            raise Conflict(f"there is already a {kind} named {name!r}") from exc
        return REGISTRY.from_values(row)

    async def get_registered(self, kind: str, *, id: int | None = None, serial: str | None = None,
                             name: str | None = None) -> RegistryEntry | None:
        given = [(column, value) for column, value in (("id", id), ("serial", serial), ("name", name))
                 if value is not None]
        if len(given) != 1:
            raise ValueError("get_registered takes exactly one of id, serial or name")
        return await self._reader.run(_get, kind, *given[0], inline=True)

    async def list_registered(self, kind: str, *, limit: int = 100, offset: int = 0) -> tuple[list[RegistryEntry], int]:
        return await self._reader.run(_list, kind, limit, offset, snapshot=True, inline=True)

    async def update_registered(self, kind: str, id: int, data: Mapping[str, Any]) -> RegistryEntry | None:
        async with self._write() as conn:
            row = (await conn.exec_driver_sql(_UPDATE, (json_text(dict(data)), to_iso(utcnow()), kind, id))).first()
        return None if row is None else REGISTRY.from_values(row)

    async def unregister(self, kind: str, id: int) -> bool:
        async with self._write() as conn:
            result = await conn.exec_driver_sql("DELETE FROM registry WHERE kind = ? AND id = ?", (kind, id))
        return result.rowcount > 0


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

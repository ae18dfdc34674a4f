"""Counters and the registry (engine.store.registry) in SQLite, the store's part: each method is
storage.registry_sql's, imported at the first call. `stepflow exec` makes none, and starts without
importing it (its statements, row map and the registry's records: tests/test_startup_imports.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from storage.connections import Connections

if TYPE_CHECKING:
    from engine.store.registry import RegistryEntry, Serial



class SqliteRegistry(Connections):
    # -- counters ------------------------------------------------------------------------------------
    async def next_value(self, name: str) -> int:
        from storage import registry_sql

        return await registry_sql.next_value(self, name)

    # -- registry ------------------------------------------------------------------------------------
    async def register(self, kind: str, name: str, data: Mapping[str, Any] | None = None, *,
                       serial: Serial | None = None) -> RegistryEntry:
        from storage import registry_sql

        return await registry_sql.register(self, kind, name, data, serial=serial)

    async def get_registered(self, kind: str, *, id: int | None = None, serial: str | None = None,
                             name: str | None = None) -> RegistryEntry | None:
        from storage import registry_sql

        return await registry_sql.get_registered(self, kind, id=id, serial=serial, name=name)

    async def list_registered(self, kind: str, *, limit: int = 100, offset: int = 0) -> tuple[list[RegistryEntry], int]:
        from storage import registry_sql

        return await registry_sql.list_registered(self, kind, limit=limit, offset=offset)

    async def update_registered(self, kind: str, id: int, data: Mapping[str, Any]) -> RegistryEntry | None:
        from storage import registry_sql

        return await registry_sql.update_registered(self, kind, id, data)

    async def unregister(self, kind: str, id: int) -> bool:
        from storage import registry_sql

        return await registry_sql.unregister(self, kind, id)

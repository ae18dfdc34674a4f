"""The protocols of counters and the registry in the store (their records: engine.store.registry, where
they are also found). A module of their own so that engine.store's `Store` takes them without
importing the records: `stepflow exec` uses none (tests/test_startup_imports.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.store.registry import RegistryEntry, Serial


class Counters(Protocol):
    async def next_value(self, name: str) -> int:
        """The counter's next value (1 for a new one), atomically: no two callers, in any process,
        get the same value, and none is skipped."""


class Registry(Protocol):
    async def register(self, kind: str, name: str, data: Mapping[str, Any] | None = None, *,
                       serial: Serial | None = None) -> RegistryEntry:
        """A new entry; with `serial`, its serial from that counter in the same transaction.
        engine.errors.Conflict when `kind` has an entry of that name (no serial is used up)."""

    async def get_registered(self, kind: str, *, id: int | None = None, serial: str | None = None,
                             name: str | None = None) -> RegistryEntry | None:
        """By exactly one of id, serial or name."""

    async def list_registered(self, kind: str, *, limit: int = 100, offset: int = 0) -> tuple[list[RegistryEntry], int]:
        """In the order they were added; returns (page, total of the kind)."""

    async def update_registered(self, kind: str, id: int, data: Mapping[str, Any]) -> RegistryEntry | None:
        """`data` merged into the entry's (RFC 7396: nested objects merge, a null removes a key);
        None when there is no such entry."""

    async def unregister(self, kind: str, id: int) -> bool: ...

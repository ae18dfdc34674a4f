"""Counters for serials, and a registry of the things other surfaces keep (runners, targets, jobs):
the store's protocols for both.

A serial (OpsConductor's `T20260001`, `J20260001`, an execution's `.0001`) comes from a counter row
incremented in the transaction that inserts what it names: a failed insert consumes no number, and
two processes never get the same one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from engine.model import utcnow


@dataclass(slots=True, frozen=True)
class Serial:
    """How to name a new registry entry: the next value of `counter`, formatted by `template`
    (`str.format` with the value), e.g. `Serial("targets.2026", "T2026{:04d}")`."""

    counter: str
    template: str = "{}"

    def format(self, value: int) -> str:
        return self.template.format(value)


@dataclass(slots=True)
class RegistryEntry:
    #: what it is ("runner", "target", "job"...): ids, names and lists are per kind
    kind: str
    #: given by the store, never reused
    id: int
    name: str
    serial: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


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

"""Counters for serials, and a registry of the things other surfaces keep (runners, targets, jobs):
the store's protocols for both.

A serial (OpsConductor's `T20260001`, `J20260001`, an execution's `.0001`) comes from a counter row
incremented in the transaction that inserts what it names: a failed insert consumes no number, and
two processes never get the same one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.model import utcnow
from engine.store.registry_protocol import Counters, Registry  # noqa: F401 - found here too (see its module)


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

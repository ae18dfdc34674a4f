"""The store interface the engine and the surfaces need, as narrow protocols; `storage.SqliteStore`
implements them all.

Executions are written only through `ExecutionEvents.apply` (a batch of events, one transaction),
called by the engine's store writer; reads return engine domain objects. The work queue, counters
and registry are written by their own guarded statements (engine.store.queue, engine.store.registry).
A component takes the narrowest protocol it uses; `Store`, the union, is what the composition root
builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from engine.store.artifacts import ArtifactReads
from engine.store.executions import ExecutionEvents, ExecutionReads, StoreStats
from engine.store.logs import LogReads
from engine.store.ops_protocol import OpsRecords
from engine.store.queue_protocol import WorkQueue
from engine.store.registry_protocol import Counters, Registry

if TYPE_CHECKING:
    from engine.store.queue import (
        FINISHED,
        QUEUE_TRANSITIONS,
        QueueCount,
        QueueFilter,
        QueueItem,
        QueueStatus,
    )
    from engine.store.registry import RegistryEntry, Serial

#: the queue's and the registry's records, found here too, imported at their first use: `stepflow
#: exec` uses none (tests/test_startup_imports.py)
_RECORDS = {
    **dict.fromkeys(("FINISHED", "QUEUE_TRANSITIONS", "QueueCount", "QueueFilter", "QueueItem", "QueueStatus"),
                    "engine.store.queue"),
    **dict.fromkeys(("RegistryEntry", "Serial"), "engine.store.registry"),
}


def __getattr__(name: str) -> Any:
    module = _RECORDS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


class Lifecycle(Protocol):
    async def open(self) -> None:
        """Create the file if needed, apply migrations and pragmas."""

    async def close(self) -> None: ...


class ChangeCounter(Protocol):
    async def data_version(self) -> int:
        """A number that changes whenever anything was committed to the store since it was last
        read, by this store object or any other (another process's too); equal numbers mean
        nothing changed. For caches of reads."""


class Store(
    Lifecycle,
    ExecutionEvents,
    ExecutionReads,
    LogReads,
    ArtifactReads,
    WorkQueue,
    Counters,
    Registry,
    OpsRecords,
    ChangeCounter,
    Protocol,
):
    """Everything the store offers (what the composition root builds)."""


__all__ = [
    "FINISHED",
    "QUEUE_TRANSITIONS",
    "ArtifactReads",
    "ChangeCounter",
    "Counters",
    "ExecutionEvents",
    "ExecutionReads",
    "Lifecycle",
    "LogReads",
    "OpsRecords",
    "QueueCount",
    "QueueFilter",
    "QueueItem",
    "QueueStatus",
    "Registry",
    "RegistryEntry",
    "Serial",
    "Store",
    "StoreStats",
    "WorkQueue",
]

"""The order of the admission queue (engine.admission) and the places in it, from stored rows: what
`stepflow ls` shows (`queued #3`) from another process. Imports nothing of the engine but its model:
the CLI's read commands start without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from engine.model import Execution, ExecutionFilter, ExecutionKind, ExecutionStatus

#: rows read at once while reading the queue from the store
_PAGE = 500


def admission_key(execution: Execution) -> tuple[int, datetime]:
    """The queue's order: higher priority first, then the oldest."""
    return (-execution.priority, execution.created_at)


def is_queued(execution: Execution) -> bool:
    """Pending and never taken from the queue by an engine (a job waits for a worker instead: no
    engine admits it)."""
    return (execution.status is ExecutionStatus.PENDING and execution.admitted_at is None
            and execution.kind is not ExecutionKind.JOB)


def queue_places(executions: Iterable[Execution]) -> dict[str, int]:
    """Each queued execution's place in the queue (1: the next to start), from all of them."""
    queued = sorted((e for e in executions if is_queued(e)), key=admission_key)
    return {e.id: place for place, e in enumerate(queued, start=1)}


class ExecutionLister(Protocol):
    async def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]: ...


async def stored_queue(store: ExecutionLister) -> list[Execution]:
    """Every queued execution the store holds (pending, never admitted), read a page at a time."""
    found: list[Execution] = []
    offset = 0
    while True:
        page, total = await store.list_executions(
            ExecutionFilter(status=ExecutionStatus.PENDING, limit=_PAGE, offset=offset))
        found += [e for e in page if is_queued(e)]
        offset += len(page)
        if not page or offset >= total:
            return found




class SyncExecutionLister(Protocol):
    def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]: ...


def stored_queue_now(store: SyncExecutionLister) -> list[Execution]:
    """`stored_queue` from a synchronous reader (storage.read_only)."""
    found: list[Execution] = []
    offset = 0
    while True:
        page, total = store.list_executions(
            ExecutionFilter(status=ExecutionStatus.PENDING, limit=_PAGE, offset=offset))
        found += [e for e in page if is_queued(e)]
        offset += len(page)
        if not page or offset >= total:
            return found

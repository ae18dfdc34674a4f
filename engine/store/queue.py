"""A queue of work claimed by external workers (executr's executors, RustCI's runners): its items,
their statuses, the one table of allowed transitions, and the store's protocol for it.

Not the engine's admission queue (pending executions wait in the executions table): an item here is
work a worker process asks for, holds while it sends heartbeats, and finishes. Every operation is one
guarded statement returning the row it changed, or None when the guard refused (procrastinate's
shape): an item is never handed to two workers, a worker that lost its item cannot finish it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from engine.model import utcnow


class QueueStatus(enum.StrEnum):
    #: waiting for a worker to claim it
    PENDING = "pending"
    #: claimed: `worker` holds it and sends heartbeats
    RUNNING = "running"
    #: its worker finished it successfully
    COMPLETED = "completed"
    #: its worker reported a failure, or it went stale on its last attempt
    FAILED = "failed"
    #: cancelled before a worker claimed it, or stopped by its worker on request
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({QueueStatus.COMPLETED, QueueStatus.FAILED, QueueStatus.CANCELLED})

Q = QueueStatus
#: target status -> statuses it may be entered from. Each of the store's statements is guarded by
#: the pairs it uses, checked against this table when the store is loaded.
QUEUE_TRANSITIONS: dict[QueueStatus, frozenset[QueueStatus]] = {
    # a stale item goes back for another attempt
    Q.PENDING: frozenset({Q.RUNNING}),
    Q.RUNNING: frozenset({Q.PENDING}),
    Q.COMPLETED: frozenset({Q.RUNNING}),
    Q.FAILED: frozenset({Q.RUNNING}),
    Q.CANCELLED: frozenset({Q.PENDING, Q.RUNNING}),
}
#: what a worker may finish its item with
FINISHED = frozenset(s for s in QueueStatus if s.is_terminal and Q.RUNNING in QUEUE_TRANSITIONS[s])


def allowed(src: QueueStatus, to: QueueStatus) -> bool:
    return src in QUEUE_TRANSITIONS[to]


@dataclass(slots=True)
class QueueItem:
    id: str
    #: the queue's name: workers claim from the queues they serve
    queue: str
    #: what to do, for the worker (JSON)
    payload: Any = None
    #: higher first; the oldest first among equals
    priority: int = 0
    status: QueueStatus = QueueStatus.PENDING
    #: who holds it (running), or held it last
    worker: str | None = None
    #: claims so far
    attempt: int = 0
    #: claims allowed before a stale item fails instead of going back to pending
    max_attempts: int = 1
    created_at: datetime = field(default_factory=utcnow)
    claimed_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = None
    #: what its worker reported (JSON)
    result: Any = None
    #: the execution running it, if any (no foreign key: the execution may be deleted first)
    execution_id: str | None = None
    #: ids other surfaces know it by
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class QueueFilter:
    queue: str | None = None
    status: QueueStatus | None = None
    worker: str | None = None
    priority: int | None = None
    #: items carrying each of these labels with these values
    labels: tuple[tuple[str, str], ...] = ()
    limit: int = 100
    offset: int = 0


@dataclass(slots=True, frozen=True)
class QueueCount:
    queue: str
    status: QueueStatus
    priority: int
    count: int


class WorkQueue(Protocol):
    async def enqueue(
        self,
        queue: str,
        payload: Any = None,
        *,
        priority: int = 0,
        max_attempts: int = 1,
        labels: Mapping[str, str] | None = None,
        execution_id: str | None = None,
        item_id: str | None = None,
        created_at: datetime | None = None,
    ) -> QueueItem:
        """A new pending item (a new id unless `item_id`; created now unless `created_at`)."""

    async def claim(self, queues: Sequence[str], worker: str) -> QueueItem | None:
        """The oldest pending item of the highest priority among `queues`, now running for
        `worker` (attempt + 1); None when there is none."""

    async def claim_many(self, queues: Sequence[str], workers: Sequence[str]) -> list[QueueItem | None]:
        """`claim` for each of `workers` in turn, in one transaction (one commit for many claimers):
        the items in the order of `workers`, None for those left without one."""

    async def heartbeat(self, item_id: str, worker: str, *, execution_id: str | None = None) -> QueueItem | None:
        """The item, its heartbeat now (and linked to `execution_id` if given); None unless it is
        running and held by `worker`."""

    async def finish(self, item_id: str, worker: str, status: QueueStatus, result: Any = None) -> QueueItem | None:
        """The item, finished with `status` (one of FINISHED) and `result`; None unless it is
        running and held by `worker`."""

    async def cancel_queued(self, item_id: str) -> QueueItem | None:
        """A pending item becomes cancelled. Returns the item whatever its status (a running one is
        not cancelled: its status says so); None when there is no such item."""

    async def requeue_stale(self, queue: str, older_than: datetime) -> list[QueueItem]:
        """Running items of `queue` whose last heartbeat (or claim) is before `older_than`: back to pending for
        another attempt while attempt < max_attempts, else failed. Returns them as they now are."""

    async def get_queue_item(self, item_id: str) -> QueueItem | None: ...

    async def list_queue_items(self, flt: QueueFilter) -> tuple[list[QueueItem], int]:
        """Newest first; returns (page, total matching)."""

    async def queue_counts(self) -> list[QueueCount]:
        """How many items per (queue, status, priority)."""

    async def queue_workers(self, queue: str, status: QueueStatus) -> dict[str, int]:
        """How many items of `queue` in `status` each worker holds (or held last)."""

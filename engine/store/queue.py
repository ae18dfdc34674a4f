"""A queue of work claimed by external workers (executr's executors, RustCI's runners): its items,
their statuses, the one table of allowed transitions, and the store's protocol for it.

Not the engine's admission queue (pending executions wait in the executions table): an item here is
work a worker process asks for, holds while it sends heartbeats, and finishes. Every operation is one
guarded statement returning the row it changed, or None when the guard refused (procrastinate's
shape): an item is never handed to two workers, a worker that lost its item cannot finish it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine.model import utcnow
from engine.store.queue_protocol import WorkQueue  # noqa: F401 - found here too (see its module)


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

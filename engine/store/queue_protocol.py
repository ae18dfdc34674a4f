"""The protocol of the work queue in the store (its records: engine.store.queue, where it is also
found). A module of its own so that engine.store's `Store` takes it without importing the records:
`stepflow exec` uses none (tests/test_startup_imports.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.store.queue import QueueCount, QueueFilter, QueueItem, QueueStatus


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

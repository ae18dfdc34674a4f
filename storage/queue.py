"""The work queue (engine.store.queue) in SQLite, the store's part: each method is storage.queue_sql's,
imported at the first call. `stepflow exec` makes none, and starts without importing it (its
statements, row map and the queue's records: tests/test_startup_imports.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from storage.connections import Connections

if TYPE_CHECKING:
    from engine.store.queue import QueueCount, QueueFilter, QueueItem, QueueStatus



class SqliteQueue(Connections):
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
        from storage import queue_sql

        return await queue_sql.enqueue(self, queue, payload, priority=priority, max_attempts=max_attempts, labels=labels,
                                          execution_id=execution_id, item_id=item_id, created_at=created_at)

    async def claim(self, queues: Sequence[str], worker: str) -> QueueItem | None:
        from storage import queue_sql

        return await queue_sql.claim(self, queues, worker)

    async def claim_many(self, queues: Sequence[str], workers: Sequence[str]) -> list[QueueItem | None]:
        from storage import queue_sql

        return await queue_sql.claim_many(self, queues, workers)

    async def heartbeat(self, item_id: str, worker: str, *, execution_id: str | None = None) -> QueueItem | None:
        from storage import queue_sql

        return await queue_sql.heartbeat(self, item_id, worker, execution_id=execution_id)

    async def finish(self, item_id: str, worker: str, status: QueueStatus, result: Any = None) -> QueueItem | None:
        from storage import queue_sql

        return await queue_sql.finish(self, item_id, worker, status, result)

    async def cancel_queued(self, item_id: str) -> QueueItem | None:
        from storage import queue_sql

        return await queue_sql.cancel_queued(self, item_id)

    async def requeue_stale(self, queue: str, older_than: datetime) -> list[QueueItem]:
        from storage import queue_sql

        return await queue_sql.requeue_stale(self, queue, older_than)

    async def get_queue_item(self, item_id: str) -> QueueItem | None:
        from storage import queue_sql

        return await queue_sql.get_queue_item(self, item_id)

    async def list_queue_items(self, flt: QueueFilter) -> tuple[list[QueueItem], int]:
        from storage import queue_sql

        return await queue_sql.list_queue_items(self, flt)

    async def queue_counts(self) -> list[QueueCount]:
        from storage import queue_sql

        return await queue_sql.queue_counts(self)

    async def queue_workers(self, queue: str, status: QueueStatus) -> dict[str, int]:
        from storage import queue_sql

        return await queue_sql.queue_workers(self, queue, status)


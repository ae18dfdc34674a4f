"""The store writer: drains the hub's sink and applies events in batches, one transaction each.

A batch is whatever has accumulated while the previous transaction ran (bounded by line count), so
a quiet engine writes each event at once and a busy one writes ~10,000s of lines per transaction.
"""

from __future__ import annotations

import asyncio
import logging

from engine.events import Event, LinesLogged
from engine.store import Store

log = logging.getLogger(__name__)

MAX_BATCH_LINES = 50_000
MAX_BATCH_EVENTS = 2_000


class StoreWriter:
    def __init__(self, store: Store, sink: asyncio.Queue[Event | asyncio.Future[None]]) -> None:
        self._store = store
        self._sink = sink
        self._task: asyncio.Task[None] | None = None
        self.applied_events = 0
        self.failed_batches = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def barrier(self) -> None:
        """Return when every event published before this call is in the store."""
        if self._task is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._sink.put(fut)
        await fut

    async def stop(self) -> None:
        if self._task is None:
            return
        await self.barrier()
        task, self._task = self._task, None
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    async def _run(self) -> None:
        while True:
            first = await self._sink.get()
            batch: list[Event] = []
            barriers: list[asyncio.Future[None]] = []
            lines = 0
            item: Event | asyncio.Future[None] | None = first
            while item is not None:
                if isinstance(item, asyncio.Future):
                    barriers.append(item)
                else:
                    batch.append(item)
                    if isinstance(item, LinesLogged):
                        lines += len(item.lines)
                if lines >= MAX_BATCH_LINES or len(batch) >= MAX_BATCH_EVENTS:
                    break
                try:
                    item = self._sink.get_nowait()
                except asyncio.QueueEmpty:
                    item = None
            if batch:
                await self._apply(batch)
            for fut in barriers:
                if not fut.done():
                    fut.set_result(None)

    async def _apply(self, batch: list[Event]) -> None:
        for attempt in range(5):
            try:
                await self._store.apply(batch)
                self.applied_events += len(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writing %d events to the store failed (attempt %d)", len(batch), attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
        self.failed_batches += 1
        log.error("gave up writing a batch of %d events to the store", len(batch))

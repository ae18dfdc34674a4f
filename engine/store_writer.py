"""The store writer: drains the hub's sink and applies events in batches, one transaction each.

A batch is whatever has accumulated while the previous transaction ran (bounded by line count), so
a quiet engine writes each event at once and a busy one writes ~10,000s of lines per transaction.
"""

from __future__ import annotations

import asyncio
import logging

from engine.events import Event, LinesLogged
from engine.hub import Sink
from engine.store import Store

log = logging.getLogger(__name__)

MAX_BATCH_LINES = 50_000
MAX_BATCH_EVENTS = 2_000
#: how long a small batch may wait for more events before it is written
#: (DESIGN.md: one transaction per ~100 ms or ~1,000 lines). A transaction costs a dozen round trips
#: to SQLite's thread: in bench/dispatch.py, 50 ms took ~0.2 ms more engine CPU per step than 250 ms.
LINGER = 0.1
LINGER_LINES = 1_000
LINGER_EVENTS = 1_000


class StoreWriter:
    def __init__(self, store: Store, sink: Sink) -> None:
        self._store = store
        self._sink = sink
        self._task: asyncio.Task[None] | None = None
        self.applied_events = 0
        self.failed_batches = 0
        self._linger_until: float | None = None

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
        # whatever came after the last barrier can no longer be written; nobody may wait on it
        dropped = 0
        while not self._sink.empty():
            item = self._sink.get_nowait()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
            else:
                dropped += 1
        if dropped:
            log.warning("%d event(s) published after the store writer stopped were not written", dropped)

    async def _run(self) -> None:
        while True:
            first = await self._sink.get()
            self._linger_until = None
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
                    item = await self._linger(batch, barriers, lines)
            if batch:
                await self._apply(batch)
            for fut in barriers:
                if not fut.done():
                    fut.set_result(None)

    async def _linger(self, batch: list[Event], barriers: list[asyncio.Future[None]],
                      lines: int) -> Event | asyncio.Future[None] | None:
        """A small batch waits up to LINGER seconds for company: a quiet engine then writes a few
        transactions a second instead of one per event (a step's start and end, its counters...).
        Nobody waits on it: a barrier (someone awaiting the store) ends the wait at once. The
        writer sleeps meanwhile, woken by the sink (see `Sink.wait_for_company`) rather than by
        each event: a step of a workflow publishes several."""
        if barriers or not batch or lines >= LINGER_LINES or len(batch) >= LINGER_EVENTS:
            return None
        loop = asyncio.get_running_loop()
        if self._linger_until is None:
            self._linger_until = loop.time() + LINGER
        if loop.time() >= self._linger_until:
            self._linger_until = None
            return None
        sink = self._sink
        woken: asyncio.Future[None] = loop.create_future()
        sink.wait_for_company(woken, LINGER_EVENTS - len(batch), LINGER_LINES - lines)
        timer = loop.call_at(self._linger_until, _wake, woken)
        try:
            await woken
        finally:
            timer.cancel()
            sink.waiter = None
        try:
            return sink.get_nowait()
        except asyncio.QueueEmpty:  # the time is up and nothing came
            self._linger_until = None
            return None

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


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

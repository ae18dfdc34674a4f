"""Fan-out of events: one lossless sink (the store writer) and any number of lossy subscribers.

The sink's queue is bounded and `publish` awaits room in it, so when the disk is slower than the
command, the reading of the command's pipe waits (the command blocks on a full pipe) and nothing is
dropped. Every other subscriber has its own bounded queue: when it lags, coalescable events
(log lines, progress) are dropped and counted, status events never are, and the publisher never waits.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

from engine.events import Event, LinesDropped, LinesLogged


class Subscriber:
    def __init__(self, hub: Hub, maxsize: int) -> None:
        self._hub = hub
        self._maxsize = maxsize
        self._items: collections.deque[Event] = collections.deque()
        self._dropped: dict[str, int] = {}
        self._wakeup = asyncio.Event()
        self._closed = False

    def offer(self, event: Event) -> None:
        if self._closed:
            return
        if event.coalescable and len(self._items) >= self._maxsize:
            if isinstance(event, LinesLogged):
                key = event.execution_id
                self._dropped[key] = self._dropped.get(key, 0) + len(event.lines)
            return
        self._items.append(event)
        self._wakeup.set()

    @property
    def dropped_total(self) -> int:
        return sum(self._dropped.values())

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._dropped and (not self._items or len(self._items) < self._maxsize // 2):
                exec_id, count = self._dropped.popitem()
                return LinesDropped(exec_id=exec_id, count=count)
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def get_nowait(self) -> Event | None:
        if self._items:
            return self._items.popleft()
        return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wakeup.set()
            self._hub._subscribers.discard(self)


class Sink(asyncio.Queue["Event | asyncio.Future[None]"]):
    """The store writer's queue: Events, or Futures used as barriers.

    A writer that lets a small batch wait for company sets `waiter` instead of waking for every
    event; the sink resolves it when a barrier arrives or when `wake_events` events or
    `wake_lines` log lines came in meanwhile."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.waiter: asyncio.Future[None] | None = None
        self.wake_events = 1
        self.wake_lines = 1
        self._events = 0
        self._lines = 0

    def wait_for_company(self, waiter: asyncio.Future[None], events: int, lines: int) -> None:
        self.waiter = waiter
        # never more than fit: a full sink makes publishers wait, and nothing would wake the writer
        self.wake_events = max(1, min(events, self.maxsize or events))
        self.wake_lines = max(1, lines)
        self._events = self._lines = 0

    def _put(self, item: Event | asyncio.Future[None]) -> None:  # the hook asyncio.Queue gives subclasses
        super()._put(item)
        waiter = self.waiter
        if waiter is None:
            return
        self._events += 1
        if isinstance(item, LinesLogged):
            self._lines += len(item.lines)
        if isinstance(item, asyncio.Future) or self._events >= self.wake_events or self._lines >= self.wake_lines:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class Hub:
    def __init__(self, sink_size: int = 256) -> None:
        self._subscribers: set[Subscriber] = set()
        #: the store writer's queue
        self.sink = Sink(maxsize=sink_size)

    def subscribe(self, maxsize: int = 10_000) -> Subscriber:
        sub = Subscriber(self, maxsize)
        self._subscribers.add(sub)
        return sub

    async def publish(self, event: Event) -> None:
        await self.sink.put(event)
        self.offer(event)

    async def publish_stored(self, event: Event) -> None:
        """Like `publish`, but subscribers get the event once the store holds it (and everything
        before it): for the end of an execution, which no one may hear of and then lose to a crash,
        while the steps' events go out at once and are written in batches."""
        await self.sink.put(event)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.sink.put(stored)
        try:
            await asyncio.shield(stored)
        finally:
            self.offer(event)  # cancelled (the engine going away): late rather than never

    def offer(self, event: Event) -> None:
        """Hand an event to the subscribers only (no sink): for hubs that mirror a remote engine."""
        for sub in tuple(self._subscribers):
            sub.offer(event)

    def close(self) -> None:
        for sub in tuple(self._subscribers):
            sub.close()

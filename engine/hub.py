"""Fan-out of events: one lossless sink (the store writer) and any number of lossy subscribers.

The sink's queue is bounded (in events, and in log lines not yet committed) and `publish` awaits
room in it, so when the disk is slower than the command, the reading of the command's pipe waits (the
command blocks on a full pipe) and nothing is dropped, nor left uncommitted long enough for a crash
to lose much. Every other subscriber has its own bounded queue: when it lags, coalescable events
(log lines, progress) are dropped and counted, status events never are, and the publisher never waits.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

from engine.events import Event, LinesDropped, LinesLogged


class Bundle(list[Event]):
    """Events that go into the sink as one item, in order (`Hub.publish_many`): what one block of a
    command's output made. `lines`: the log lines among them."""

    def __init__(self, events: list[Event], lines: int | None = None) -> None:
        """`lines`: the log lines among `events`, when the publisher counted them as it went."""
        super().__init__(events)
        if lines is None:
            lines = sum([len(e.lines) for e in events if type(e) is LinesLogged])  # type: ignore[attr-defined]
        self.lines = lines


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

    def offer_many(self, events: list[Event]) -> None:
        """`offer` of each, in order (a block of a command's output: thousands a second)."""
        if self._closed:
            return
        items = self._items
        maxsize = self._maxsize
        before = len(items)
        if before + len(events) <= maxsize:  # room for all: none is dropped, as below
            if events:
                items.extend(events)
                self._wakeup.set()
            return
        dropped = self._dropped
        for event in events:
            if event.coalescable and len(items) >= maxsize:
                if isinstance(event, LinesLogged):
                    key = event.execution_id
                    dropped[key] = dropped.get(key, 0) + len(event.lines)
                continue
            items.append(event)
        if len(items) != before:
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


#: log lines read from the commands but not yet committed to the store, at most (about: one more
#: event per command may go in when there is room). What a crash of the engine can lose of them: at
#: the ~300,000 lines/s the store takes, ~70 ms (bench/crash_loss.py). 10,000 cost a third of that
#: throughput (bench/ingest.py: the writer's batches, half of this, got too small).
MAX_UNCOMMITTED_LINES = 20_000
#: events queued for the store writer at most (a Bundle counts its events). A command printing
#: markers makes ~100,000 events a second: 256 made the writer's transactions a few hundred events
#: each, and a transaction's own cost (a dozen round trips to SQLite's thread) came to a third of
#: the work; 4,096 is still ~40 ms of them.
SINK_EVENTS = 4_096


class Sink(asyncio.Queue["Event | Bundle | asyncio.Future[None]"]):
    """The store writer's queue: Events, Bundles of them, or Futures used as barriers.

    Log lines wait for room: `put` of a LinesLogged awaits while MAX_UNCOMMITTED_LINES lines are
    queued or being written (the writer reports what it wrote with `committed`), so the readers of
    the commands' pipes wait, and the commands block on full pipes, instead of a backlog that a
    kill -9 would lose. Other events never wait for lines (only for the queue's room).

    A writer that lets a small batch wait for company sets `waiter` instead of waking for every
    event; the sink resolves it when a barrier arrives or when `wake_events` events or
    `wake_lines` log lines came in meanwhile."""

    def __init__(self, maxsize: int, max_uncommitted_lines: int = MAX_UNCOMMITTED_LINES) -> None:
        super().__init__(maxsize)
        self.waiter: asyncio.Future[None] | None = None
        self.wake_events = 1
        self.wake_lines = 1
        self._events = 0
        self._lines = 0
        self.max_uncommitted_lines = max_uncommitted_lines
        #: log lines put and not yet reported `committed`
        self.uncommitted_lines = 0
        #: events in the queue (a Bundle counts its events): what `maxsize` bounds
        self._queued_events = 0
        self._room: asyncio.Future[None] | None = None

    async def put(self, item: Event | Bundle | asyncio.Future[None]) -> None:
        if isinstance(item, LinesLogged) or (isinstance(item, Bundle) and item.lines):
            while self.uncommitted_lines >= self.max_uncommitted_lines:
                if self._room is None or self._room.done():
                    self._room = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._room)  # one waiter's cancellation is not the others'
        await super().put(item)

    def full(self) -> bool:
        """`maxsize` events are queued (asyncio.Queue's `put` waits while this holds)."""
        return 0 < self.maxsize <= self._queued_events

    def has_room_for(self, item: Event | Bundle | asyncio.Future[None]) -> bool:
        """`put` of `item` would not wait."""
        maxsize = self.maxsize
        return (maxsize <= 0 or self._queued_events < maxsize) and (
            type(item) is not LinesLogged or self.uncommitted_lines < self.max_uncommitted_lines
        )

    def committed(self, lines: int) -> None:
        """The writer is done with `lines` log lines taken from the sink (written, or given up)."""
        self.uncommitted_lines = max(0, self.uncommitted_lines - lines)
        room = self._room
        if room is not None and self.uncommitted_lines < self.max_uncommitted_lines:
            self._room = None
            if not room.done():
                room.set_result(None)

    def wait_for_company(self, waiter: asyncio.Future[None], events: int, lines: int) -> None:
        self.waiter = waiter
        # never more than fit: a full sink makes publishers wait, and nothing would wake the writer
        self.wake_events = max(1, min(events, self.maxsize or events))
        self.wake_lines = max(1, lines)
        self._events = self._lines = 0

    def _get(self) -> Event | Bundle | asyncio.Future[None]:  # asyncio.Queue's hook, as `_put`
        item = super()._get()
        self._queued_events -= len(item) if isinstance(item, Bundle) else 1
        return item

    def _put(self, item: Event | Bundle | asyncio.Future[None]) -> None:  # the hook asyncio.Queue gives subclasses
        super()._put(item)
        if isinstance(item, Bundle):
            lines, events = item.lines, len(item)
        else:
            lines, events = (len(item.lines) if isinstance(item, LinesLogged) else 0), 1
        self._queued_events += events
        self.uncommitted_lines += lines
        waiter = self.waiter
        if waiter is None:
            return
        self._events += events
        self._lines += lines
        if isinstance(item, asyncio.Future) or self._events >= self.wake_events or self._lines >= self.wake_lines:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class Hub:
    def __init__(self, sink_size: int = SINK_EVENTS) -> None:
        self._subscribers: set[Subscriber] = set()
        #: the store writer's queue
        self.sink = Sink(maxsize=sink_size)

    def subscribe(self, maxsize: int = 10_000) -> Subscriber:
        sub = Subscriber(self, maxsize)
        self._subscribers.add(sub)
        return sub

    async def publish(self, event: Event) -> None:
        sink = self.sink
        # the usual case, room in the sink, without the coroutines of `Sink.put` (a command's
        # output makes several events a line when it prints markers)
        if sink.has_room_for(event):
            sink.put_nowait(event)
        else:
            await sink.put(event)
        for sub in self._subscribers:
            sub.offer(event)

    async def publish_many(self, events: list[Event], lines: int | None = None) -> None:
        """`publish` of each, in order, as one item of the sink (`Bundle`): for what one block of a
        command's output made, thousands of events a second when it prints markers. `lines`: the
        log lines among them, when the caller counted them (else they are counted here)."""
        if not events:
            return
        await self.sink.put(Bundle(events, lines))
        for sub in self._subscribers:
            sub.offer_many(events)

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

"""Server-Sent Events for every surface (RustCI's `GET /api/runners/{id}/logs?follow=true` first),
on `aiohttp-sse`'s `EventSourceResponse` (headers, framing, the keep-alive comment `: ping`, a send
timeout that aborts a client that stopped reading).

`SseHub` holds the open streams by topic (a runner id, an execution id, "*"...). Producers call
`publish(topic, data, event=..., id=...)`: it never waits; each stream has its own bounded queue,
written by the stream's handler. A handler opens its stream and returns once it ends:

    async def follow(request):
        async with request.app[RUSTCI_SSE].open(request, runner_id) as stream:
            for line in backlog:                         # written before anything published after
                stream.offer(json.dumps(line), id=str(line["seq"]))
            await stream.run()                           # until the client goes, or shutdown
        return stream.response

A stream ends when its client goes (the next write fails: an event's, or the keep-alive's every
`keepalive` seconds), when its client does not keep up (`limit` events waiting: the stream is
closed, the client reconnects with `Last-Event-ID`), or when `close_all()` runs at shutdown (what
waits is written first). Then nothing is left of it: not in the hub, no task, no queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from api_compat.state import CLOSE_STREAMS

log = logging.getLogger(__name__)

#: seconds between keep-alive comments on an idle stream (proxies close silent connections; a write
#: is also how a gone client is noticed)
KEEPALIVE = 15.0
#: events a stream may hold unwritten before its client counts as too slow
LIMIT = 1_000
#: seconds one write may wait for a client that stopped reading before the connection is aborted
SEND_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str | None = None
    id: str | None = None
    #: reconnection delay for the client, in milliseconds
    retry: int | None = None


class SseStream:
    """One client's stream: its bounded queue and its response."""

    __slots__ = ("topic", "response", "limit", "_transport", "_pending", "_wake", "_closed", "overflowed",
                 "ended")

    def __init__(self, topic: str, response: EventSourceResponse, limit: int,
                 transport: asyncio.Transport | None = None) -> None:
        self.topic = topic
        self.response = response
        self.limit = limit
        self._transport = transport
        self._pending: deque[SseEvent] = deque()
        self._wake = asyncio.Event()
        self._closed = False
        #: the client did not keep up (its queue was full)
        self.overflowed = False
        #: set once the stream has ended and left its hub
        self.ended = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def offer(self, data: str, *, event: str | None = None, id: str | None = None,
              retry: int | None = None) -> bool:
        """Queue an event (never waits); False when the stream is closed or its client is too slow
        (which closes it)."""
        if self._closed:
            return False
        if len(self._pending) >= self.limit:
            log.info("SSE client of %s fell %d events behind; closing its stream", self.topic, self.limit)
            self.overflowed = True
            self._pending.clear()
            self.close()
            return False
        self._pending.append(SseEvent(data, event, id, retry))
        self._wake.set()
        return True

    def close(self) -> None:
        """End the stream once what waits is written (nothing more is accepted)."""
        self._closed = True
        self._wake.set()

    def abort(self) -> None:
        """Drop the connection now (a client that does not read what waits for it)."""
        self.close()
        self._pending.clear()
        if self._transport is not None:
            self._transport.abort()

    async def run(self) -> None:
        """Write the queued events as they come, until the stream is closed or its client is gone."""
        response = self.response
        wake = self._wake
        pending = self._pending
        while True:
            await wake.wait()
            wake.clear()
            while pending:
                item = pending.popleft()
                try:
                    await response.send(item.data, id=item.id, event=item.event, retry=item.retry)
                except (ConnectionError, TimeoutError, RuntimeError):
                    # gone (or stopped reading: aborted by the send timeout)
                    self._closed = True
                    pending.clear()
                    return
            if self._closed:
                return


class SseHub:
    """The open Server-Sent Events streams of one surface, by topic (see the module docstring)."""

    def __init__(self, *, keepalive: float = KEEPALIVE, limit: int = LIMIT,
                 send_timeout: float = SEND_TIMEOUT) -> None:
        self.keepalive = keepalive
        self.limit = limit
        self.send_timeout = send_timeout
        self._streams: dict[str, set[SseStream]] = {}
        self._count = 0
        self.accepting = True
        #: notified whenever a stream opens or ends (for whoever waits on `wait_for_count`)
        self._changed = asyncio.Condition()

    @property
    def count(self) -> int:
        """Streams open now."""
        return self._count

    def streams(self, topic: str) -> frozenset[SseStream]:
        return frozenset(self._streams.get(topic, ()))

    def publish(self, topic: str, data: str, *, event: str | None = None, id: str | None = None) -> int:
        """Offer an event to every stream of `topic` (never waits); how many took it."""
        streams = self._streams.get(topic)
        if not streams:
            return 0
        return sum(stream.offer(data, event=event, id=id) for stream in tuple(streams))

    @contextlib.asynccontextmanager
    async def open(self, request: web.Request, topic: str) -> AsyncIterator[SseStream]:
        """Prepare the response (its headers go out) and register the stream under `topic`; on
        leaving, the stream is unregistered and its response ended. 503 once shutdown began."""
        if not self.accepting:
            raise web.HTTPServiceUnavailable(reason="the server is shutting down")
        response = EventSourceResponse(ping_interval=self.keepalive, send_timeout=self.send_timeout)
        await response.prepare(request)
        stream = SseStream(topic, response, self.limit, request.transport)
        # the response's keep-alive ends when a write of it fails: the client is gone
        gone = asyncio.ensure_future(response.wait())
        gone.add_done_callback(lambda _task: stream.close())
        self._streams.setdefault(topic, set()).add(stream)
        self._count += 1
        await self._notify()
        try:
            yield stream
        finally:
            stream.close()
            stream._pending.clear()
            subs = self._streams.get(topic)
            if subs is not None:
                subs.discard(stream)
                if not subs:
                    del self._streams[topic]
            self._count -= 1
            with contextlib.suppress(RuntimeError):
                response.stop_streaming()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await gone
            stream.ended.set()
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for_count(self, count: int) -> None:
        """Until exactly `count` streams are open (wrap in a timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._count == count)

    async def close_all(self, *, timeout: float = 2.0) -> None:
        """Shutdown: refuse new streams, end every open one (after what it has queued) and wait
        until their handlers have let go; a stream still writing after `timeout` s is aborted."""
        self.accepting = False
        streams = [s for subs in self._streams.values() for s in subs]
        for stream in streams:
            stream.close()
        if not streams:
            return
        ended = asyncio.gather(*(s.ended.wait() for s in streams))
        try:
            await asyncio.wait_for(asyncio.shield(ended), timeout)
        except TimeoutError:
            for stream in streams:
                if not stream.ended.is_set():
                    log.info("SSE client of %s does not read; dropping it", stream.topic)
                    stream.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended, timeout)

    def install(self, app: web.Application) -> None:
        """Close the streams on the application's shutdown (before aiohttp waits for handlers) and
        when the listener stops (`api_compat.state.CLOSE_STREAMS`)."""

        async def close_streams(_app: web.Application) -> None:
            await self.close_all()

        app.on_shutdown.append(close_streams)
        if CLOSE_STREAMS in app:
            app[CLOSE_STREAMS].append(self.close_all)

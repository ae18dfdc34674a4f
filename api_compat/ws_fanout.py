"""WebSocket fan-out for every surface: the connection registry, each connection's bounded send
queue, the subscription filter (topics: an execution id, a runner id...; "*" for all), slow-client
handling, pings, and closing every socket on shutdown. A surface subclasses `FanoutHub` with its
own messages (what a socket's text means, what its drop notice says, its first message), serves
its route with `hub.serve(request)`, and feeds the hub its events' messages:

    hub.broadcast(text)                                   # every client; never dropped
    hub.to_interested(topic, text)                        # the clients of `topic`; never dropped
    targets, count = hub.budgeted(topic, len(lines), first_seq)   # droppable, within the budget
    blob = b"".join(frame(t) for t in texts_of(lines[:count]))    # encoded once for every client
    for client in targets:
        client.send_droppable(topic, blob, count, first_seq)

A client holds frames (encoded and framed once by the hub, shared by every client) in two lanes,
status messages and droppable ones, and writes them without waiting when its transport has room. A
client that lags loses droppable messages beyond its queue's `limit` (and is told which, in sequence,
by the hub's `drop_notice`), never status messages, which jump ahead of its queued droppable ones. A
client that stopped reading (4 MiB unread in its socket) is closed with 1008, one silent for
`ping_timeout` seconds with 1001.

`LogBudgets` caps the droppable messages streamed per topic per second, summed over its subscribers:
writing every line to a thousand sockets would take the loop from the engine. What it drops, it
drops for every client alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import time
import weakref
from collections.abc import Collection

from aiohttp import WSCloseCode, WSMsgType, web

from api_compat.ws_queue import LogBudgets, WsClient, frame

__all__ = ["WILDCARD", "FanoutHub", "LogBudgets", "WsClient", "frame"]

log = logging.getLogger(__name__)

WILDCARD = "*"
#: seconds before writing again to clients whose transports were full
_RETRY = 0.05
#: seconds droppable messages are gathered before they are written (fewer, bigger writes to each socket)
_TICK = 0.02
#: ... and status messages: they go out sooner, with whatever else waits
_STATUS_TICK = 0.02
#: after writing to every client that had something, wait this many times as long before the next
_REST_FACTOR = 3
#: kernel send buffer of a WebSocket connection
_SNDBUF = 64 * 1024
#: default seconds between pings, and of silence (not even a pong) after which a client is closed.
#: Lagging is not silence: a client reading behind a backlog still answers, later.
PING_EVERY = 30.0
PING_TIMEOUT = 120.0
#: the largest message a client may send
MAX_MESSAGE = 1024 * 1024


class FanoutHub:
    """The sockets of one surface, their subscriptions and when to write to them (see the module
    docstring). A surface's subclass says what its messages are: `on_open` (the first message),
    `on_text` (a client's message), `on_binary`, `on_failure` and `drop_notice`; and feeds events in
    with `broadcast`, `to_interested`, `budgeted` + `WsClient.send_droppable`.

    `client_queue`: droppable messages a client may hold unwritten; `log_budget`: droppable messages
    per second streamed for one topic, summed over its clients (0: no budget)."""

    client_class: type[WsClient] = WsClient

    def __init__(self, *, client_queue: int = 2_000, log_budget: int = 20_000, ping_every: float = PING_EVERY,
                 ping_timeout: float = PING_TIMEOUT) -> None:
        self.client_queue = client_queue
        self.log_budget = log_budget
        self.ping_every = ping_every
        self.ping_timeout = ping_timeout
        self._budgets = LogBudgets(log_budget)
        self._heartbeat: asyncio.Task[None] | None = None
        self.clients: weakref.WeakSet[WsClient] = weakref.WeakSet()
        self._by_topic: dict[str, set[WsClient]] = {}
        self._wildcard: set[WsClient] = set()
        self._ids = itertools.count(1)
        self.total_messages = 0
        self.accepting = False
        self._dirty: set[WsClient] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_soon = False
        #: loop time before which no flush starts (see _flush)
        self._rested = 0.0

    @property
    def client_count(self) -> int:
        return len(self.clients)

    # -- what a surface says (override) ----------------------------------------------------------
    def drop_notice(self, topic: str, count: int, first: int, last: int, why: str) -> str:
        """The message telling a client that `count` droppable messages of `topic` (sequence numbers
        `first`..`last`, -1 when unknown) were not sent, `why`."""
        return f'{{"type": "dropped", "topic": "{topic}", "count": {count}}}'

    def on_open(self, client: WsClient, request: web.Request) -> None:
        """A socket was accepted (send its first message here)."""

    async def on_text(self, client: WsClient, text: str) -> None:
        """A text message from `client`."""

    def on_binary(self, client: WsClient) -> None:
        """A binary message from `client` (ignored by default)."""

    def on_failure(self, client: WsClient) -> None:
        """`on_text` raised (logged already)."""

    # -- life cycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Accept sockets and ping them."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._ping_clients(), name="ws-heartbeat")
        self.accepting = True

    async def stop(self) -> None:
        """Refuse new sockets, stop the pings, `drain` what the surface still has to say, then close
        every client with 1001 (after what it has queued)."""
        self.accepting = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        await self.drain()
        await self.close_clients()

    async def drain(self) -> None:
        """Before the sockets close at `stop`: deliver what the surface's source already published."""

    async def close_clients(self) -> None:
        clients = list(self.clients)
        if clients:
            await asyncio.gather(*(c.close(WSCloseCode.GOING_AWAY, b"server shutting down") for c in clients),
                                 return_exceptions=True)

    async def _ping_clients(self) -> None:
        """A ping to every client every `ping_every` s (ahead of its queued droppable messages); a
        client that sent nothing for `ping_timeout` s is gone. aiohttp's own heartbeat closed clients
        that were only slow to read (their pong waits behind what they have not read yet)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_every)
            now = loop.time()
            for client in list(self.clients):
                if client._closing:
                    continue
                if now - client.last_seen > self.ping_timeout:
                    log.info("WebSocket client %s answered no ping for %.0f s; closing it", client.id,
                             now - client.last_seen)
                    loop.create_task(client.close(WSCloseCode.GOING_AWAY, b"no answer to pings"))
                else:
                    client.ping()

    # -- the socket --------------------------------------------------------------------------------
    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """A WebSocket handler's body: accept the socket, register it, hand its messages to the
        surface until it closes, unregister it. 503 once `stop` began."""
        if not self.accepting:
            raise web.HTTPServiceUnavailable(reason="the server is shutting down")
        # no permessage-deflate: one frame's bytes are then the same for every client
        # no aiohttp heartbeat (the hub pings, see _ping_clients); pings answered here
        ws = web.WebSocketResponse(autoping=False, max_msg_size=MAX_MESSAGE, compress=False)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(reason="this address takes WebSocket connections only")
        await ws.prepare(request)
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            # a small kernel buffer: what a slow reader cannot take waits here, where it can be
            # dropped, instead of seconds of log in the kernel ahead of the next status message
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
        client = self.register(ws, transport)
        loop = asyncio.get_running_loop()
        try:
            self.on_open(client, request)
            async for msg in ws:
                client.last_seen = loop.time()
                if msg.type is WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type is WSMsgType.PONG:
                    pass
                elif msg.type is WSMsgType.TEXT:
                    try:
                        await self.on_text(client, msg.data)
                    except Exception:
                        log.exception("handling a WebSocket message failed")
                        self.on_failure(client)
                elif msg.type is WSMsgType.BINARY:
                    self.on_binary(client)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            self.unregister(client)
        return ws

    # -- clients -----------------------------------------------------------------------------------
    def register(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> WsClient:
        """A new client, wanting every topic until it subscribes (see `subscribe`)."""
        client = self.client_class(self, ws, transport, next(self._ids), self.client_queue)
        self.clients.add(client)
        client.wildcard = True
        client.implicit = True
        self._wildcard.add(client)
        return client

    def unregister(self, client: WsClient) -> None:
        self.clients.discard(client)
        self._dirty.discard(client)
        self._wildcard.discard(client)
        for topic in client.subscriptions:
            subs = self._by_topic.get(topic)
            if subs is not None:
                subs.discard(client)
                if not subs:
                    del self._by_topic[topic]
        client.subscriptions.clear()

    def _narrow(self, client: WsClient) -> None:
        """The first `subscribe` (or unsubscribing "*") ends the implicit "everything" of a new client."""
        if client.implicit:
            client.implicit = False
            client.wildcard = False
            self._wildcard.discard(client)

    def subscribe(self, client: WsClient, topic: str) -> None:
        self._narrow(client)
        if topic == WILDCARD:
            client.wildcard = True
            self._wildcard.add(client)
        else:
            client.subscriptions.add(topic)
            self._by_topic.setdefault(topic, set()).add(client)

    def unsubscribe(self, client: WsClient, topic: str) -> None:
        if topic == WILDCARD:
            # "*" off: nothing more for a client that never subscribed either
            self._narrow(client)
            client.wildcard = False
            self._wildcard.discard(client)
            return
        client.subscriptions.discard(topic)
        subs = self._by_topic.get(topic)
        if subs is not None:
            subs.discard(client)
            if not subs:
                del self._by_topic[topic]

    def interested(self, topic: str) -> Collection[WsClient]:
        subs = self._by_topic.get(topic)
        if not subs:
            return self._wildcard
        if not self._wildcard:
            return subs
        return self._wildcard | subs

    # -- sending -----------------------------------------------------------------------------------
    def broadcast(self, text: str) -> None:
        """To every client (status: never dropped)."""
        blob = frame(text)
        for client in self.clients:
            client.send(blob)

    def to_interested(self, topic: str, text: str) -> None:
        """To the clients that want `topic` (status: never dropped), after what the budget dropped."""
        blob = frame(text)
        targets = tuple(self.interested(topic))
        self.tell_dropped(topic, targets)
        for client in targets:
            client.send(blob)

    def budgeted(self, topic: str, total: int, first_seq: int) -> tuple[Collection[WsClient], int]:
        """The clients that want `total` droppable messages of `topic` (numbered from `first_seq`),
        and how many of them (the first ones) the topic's budget lets out now; the rest are noted
        as dropped for everyone, and told before the topic's next message."""
        targets = self.interested(topic)
        if not targets:
            return targets, 0
        count = self._budgets.allow(topic, len(targets), total)
        if count:
            targets = tuple(targets)
            self.tell_dropped(topic, targets)
        if count < total:
            self._budgets.note_dropped(topic, first_seq + count, first_seq + total - 1)
        return targets, count

    def tell_dropped(self, topic: str, targets: tuple[WsClient, ...]) -> None:
        """Before the next message of `topic`: what the budget dropped since the last one."""
        dropped = self._budgets.take_dropped(topic)
        if dropped is None:
            return
        count, first, last = dropped
        notice = frame(self.drop_notice(topic, count, first, last,
                                        "to keep the stream within the server's log budget"))
        for client in targets:
            client.send_notice(topic, notice, count, first, last)

    def forget(self, topic: str) -> None:
        """`topic` has ended: its budget goes."""
        self._budgets.forget(topic)

    # -- writing: one flush per loop iteration for every client that has something waiting -------
    def mark_dirty(self, client: WsClient, *, soon: bool = False) -> None:
        """Writes are gathered for a short moment (one write per client per tick, not per event):
        `_TICK` for droppable messages, `_STATUS_TICK` once a status message waits."""
        self._dirty.add(client)
        if self._flush_soon:
            return
        handle = self._flush_handle
        if handle is None:
            self._flush_soon = soon
            self._flush_handle = self._flush_later(_STATUS_TICK if soon else _TICK)
        elif soon:
            self._flush_soon = True
            loop = asyncio.get_running_loop()
            if handle.when() > max(loop.time() + _STATUS_TICK, self._rested):
                handle.cancel()
                self._flush_handle = self._flush_later(_STATUS_TICK)

    def _flush_later(self, delay: float) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_at(max(loop.time() + delay, self._rested), self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._flush_soon = False
        loop = asyncio.get_running_loop()
        # CPU time, not wall time: on a busy machine a round may wait for a core; that is no
        # reason to wait longer before the next one
        started = time.thread_time()
        dirty = self._dirty
        self._dirty = set()
        for client in dirty:
            try:
                done = client.flush()
            except (ConnectionError, RuntimeError):
                done = True
            if not done:
                self._dirty.add(client)
        # A write to each of a thousand sockets takes tens of ms (on loopback the kernel delivers
        # to the reader within the send). Rest the loop a few times as long before the next round:
        # the fan-out then takes at most ~1/(1 + _REST_FACTOR) of it, the engine keeps the rest,
        # and the writes get fewer and bigger as the clients get more.
        self._rested = loop.time() + (time.thread_time() - started) * _REST_FACTOR
        if self._dirty:
            # transports still full: look again shortly (their readers are slow)
            self._flush_handle = self._flush_later(_RETRY)

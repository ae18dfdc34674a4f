"""The WebSocket fan-out's per-client side (`api_compat.ws_fanout` is the hub): each socket's own
queue of frames, in two lanes, written without waiting; and the per-topic budget of droppable
messages. A client that lags loses droppable messages beyond its queue's `limit` (it is told which,
by its hub's `drop_notice`), never status messages, which jump ahead; a client that stopped reading
(`_HARD_BYTES` unread in its socket) is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import struct
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, web

if TYPE_CHECKING:
    from api_compat.ws_fanout import FanoutHub

log = logging.getLogger(__name__)

#: a client whose transport holds this many bytes of status messages it has not read is closed
_HARD_BYTES = 4 * 1024 * 1024
_PING_FRAME = b"\x89\x00"
#: the budget is given out per window of this many seconds: droppable messages reach a client in at
#: most a few writes per second, whatever the topic's rate
_WINDOW = 0.25
#: droppable messages per second a topic's subscribers get at least, however many they are
_MIN_RATE = 20


def frame(text: str) -> bytes:
    """A server-to-client text frame (unmasked, uncompressed): the same bytes serve every client."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


class WsClient:
    """One socket. Messages are encoded and framed once by the hub and shared by every client;
    a client holds the frames it has not written yet, in two lanes: status messages (and replies)
    and droppable ones (log entries, progress-only updates, drop notices). Writing never waits: the
    hub's flush writes a client's frames when its transport has room (below `HIGH_WATER` bytes
    buffered), in the order they came. A client whose transport is full is lagging: its status
    messages are written at once, ahead of its queued droppable ones, and droppable messages beyond
    `limit` are dropped for it and counted (per topic). A surface that needs more per client
    subclasses it (with `__slots__`) and makes its hub's `make_client` build it."""

    HIGH_WATER = 64 * 1024

    __slots__ = (
        "id",
        "ws",
        "transport",
        "hub",
        "limit",
        "subscriptions",
        "wildcard",
        "implicit",
        "_status",
        "_logs",
        "_n",
        "_droppable",
        "_dropped",
        "_closing",
        "_lagging",
        "last_seen",
        "__weakref__",
    )

    def __init__(
        self,
        hub: FanoutHub,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        client_id: int,
        limit: int,
    ) -> None:
        self.id = client_id
        self.ws = ws
        self.transport = transport
        self.hub = hub
        self.limit = limit
        self.subscriptions: set[str] = set()
        self.wildcard = False
        #: wildcard only because it has not subscribed yet (the hub narrows it at the first subscribe)
        self.implicit = False
        # (order, frame bytes): the order merges the two lanes back when the client keeps up
        self._status: list[tuple[int, bytes]] = []
        self._logs: list[tuple[int, bytes]] = []
        self._n = 0
        #: log entries among the waiting frames
        self._droppable = 0
        # topic -> [count, first_seq, last_seq]
        self._dropped: dict[str, list[int]] = {}
        self._closing = False
        self._lagging = False
        #: loop time of the last message received from the client (pongs included)
        self.last_seen = asyncio.get_running_loop().time()

    def wants(self, topic: str) -> bool:
        return self.wildcard or topic in self.subscriptions

    # -- queueing (called by the hub, never awaits) ----------------------------------------------
    def send(self, text: str | bytes) -> None:
        """A message that must arrive (status, replies). Entries lost before it are reported in
        the log lane first, so that a client that keeps up learns its log is incomplete before
        an execution's end."""
        if self._dropped:
            self._drop_notices()
        self._n += 1
        self._status.append((self._n, frame(text) if isinstance(text, str) else text))
        self.hub.mark_dirty(self, soon=True)

    def send_droppable(self, topic: str, frames: bytes, count: int, first_seq: int = -1) -> None:
        """`count` droppable messages (log entries, progress updates) as one blob of frames: all or none."""
        if self._droppable + count > self.limit:
            last = first_seq + count - 1 if first_seq >= 0 else -1
            self.note_dropped(topic, count, first_seq, last)
            return
        if self._dropped and self._droppable <= self.limit // 2:
            self._drop_notices()
        self._n += 1
        self._logs.append((self._n, frames))
        self._droppable += count
        self.hub.mark_dirty(self)

    def send_notice(
        self, topic: str, notice: bytes, count: int, first_seq: int, last_seq: int
    ) -> None:
        """The hub dropped entries for every client (its log budget): `notice` says so, shared. A
        client that lost entries of its own meanwhile gets one notice of its own for both."""
        if topic in self._dropped:
            self.note_dropped(topic, count, first_seq, last_seq)
            return
        self._n += 1
        self._logs.append((self._n, notice))
        self.hub.mark_dirty(self)

    def note_dropped(self, topic: str, count: int, first_seq: int = -1, last_seq: int = -1) -> None:
        entry = self._dropped.get(topic)
        if entry is None:
            self._dropped[topic] = [count, first_seq, last_seq]
        else:
            entry[0] += count
            if first_seq >= 0:
                entry[1] = first_seq if entry[1] < 0 else min(entry[1], first_seq)
                entry[2] = max(entry[2], last_seq)
        self.hub.mark_dirty(self)

    def _drop_notices(self) -> None:
        for topic, (count, first, last) in self._dropped.items():
            self._n += 1
            self._logs.append(
                (self._n, frame(self.hub.drop_notice(topic, count, first, last, "because this client fell behind")))
            )
        self._dropped.clear()

    # -- writing -----------------------------------------------------------------------------------
    def flush(self, *, force: bool = False) -> bool:
        """Write what waits if the transport has room (or `force`); True when nothing is left.
        Status messages are written even when it has none."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self._status.clear()
            self._logs.clear()
            self._dropped.clear()
            self._droppable = 0
            return True
        buffered = transport.get_write_buffer_size()
        if not force and buffered > self.HIGH_WATER:
            self._lagging = True
            if self._status:
                # ahead of the queued log entries
                transport.write(b"".join([f for _, f in self._status]))
                self.hub.total_messages += len(self._status)
                self._status.clear()
                if buffered > _HARD_BYTES:
                    self._close_too_slow()
            return False
        if self._dropped and not self._logs:
            self._drop_notices()
        status, logs = self._status, self._logs
        if status or logs:
            if not logs:
                frames = [f for _, f in status]
            elif not status:
                frames = [f for _, f in logs]
            elif self._lagging:
                frames = [f for _, f in status] + [f for _, f in logs]
            else:
                frames = [f for _, f in heapq.merge(status, logs)]
            transport.write(b"".join(frames) if len(frames) > 1 else frames[0])
            self.hub.total_messages += len(status) + len(logs)
            status.clear()
            logs.clear()
            self._droppable = 0
        self._lagging = False
        return not self._dropped

    def _close_too_slow(self) -> None:
        if self._closing:
            return
        log.warning("WebSocket client %s stopped reading; closing it", self.id)
        self._closing = True
        self._logs.clear()
        asyncio.get_running_loop().create_task(
            self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"client too slow")
        )

    def ping(self) -> None:
        self._n += 1
        self._status.append((self._n, _PING_FRAME))
        self.hub.mark_dirty(self)

    async def close(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"") -> None:
        """Hand what waits to the transport (bounded by the queue limits), then close with `code`:
        the close frame follows the messages."""
        self._closing = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.flush(force=True)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=message)


class _Budget:
    """A topic's droppable messages streamed to sockets, per window; what was dropped for everyone."""

    __slots__ = ("window_end", "left", "count", "first", "last")

    def __init__(self) -> None:
        self.window_end = 0.0
        self.left = 0
        self.count = 0
        self.first = -1
        self.last = -1


class LogBudgets:
    """`per_second`: droppable messages per second streamed for one topic, summed over the clients
    that want it (each gets per_second / clients, at least `_MIN_RATE`), given out per window of
    `_WINDOW` s; 0: no budget. Keeps count of what it refused, until the hub tells the clients."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._budgets: dict[str, _Budget] = {}

    def allow(self, topic: str, clients: int, count: int) -> int:
        """How many of `count` entries go out now (the first ones)."""
        if self.per_second <= 0:
            return count
        budget = self._budgets.get(topic)
        if budget is None:
            budget = self._budgets[topic] = _Budget()
        now = asyncio.get_running_loop().time()
        if now >= budget.window_end:
            rate = max(self.per_second / clients, _MIN_RATE)
            budget.left = max(int(rate * _WINDOW), 1)
            budget.window_end = now + _WINDOW
        allowed = min(budget.left, count)
        budget.left -= allowed
        return allowed

    def note_dropped(self, topic: str, first_seq: int, last_seq: int) -> None:
        """Entries `first_seq`..`last_seq` were refused by `allow` (which made the budget)."""
        budget = self._budgets[topic]
        budget.count += last_seq - first_seq + 1
        if budget.first < 0:
            budget.first = first_seq
        budget.last = last_seq

    def take_dropped(self, topic: str) -> tuple[int, int, int] | None:
        """(count, first_seq, last_seq) refused since the last call, if any; forgets them."""
        budget = self._budgets.get(topic)
        if budget is None or not budget.count:
            return None
        taken = (budget.count, budget.first, budget.last)
        budget.count, budget.first, budget.last = 0, -1, -1
        return taken

    def forget(self, topic: str) -> None:
        self._budgets.pop(topic, None)


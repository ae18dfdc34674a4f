"""StepFlow Monitor's WebSocket: engine events become messages, fanned out to clients.

One engine subscription feeds the hub; each event is encoded once and offered to the clients that
want it. Each client has its own queue, written by the hub's flush without waiting, so a slow client
never stalls the others nor the engine. A client's queue holds at most `limit` droppable messages
(`log_entry`, and `step_update` for progress-only changes); beyond that they are dropped for that
client and counted, and it gets an `error` message with `error_code` `LOG_ENTRIES_DROPPED` saying how
many and which sequence numbers to fetch again (`GET /api/executions/{id}/logs`), in sequence with
its log entries. Status messages are never dropped, and jump ahead of the log entries queued for a
client that lags. A client that stopped reading (4 MiB unread in its socket) is closed with 1008,
one silent for `_PING_TIMEOUT` with 1001.

Before any client's queue, the hub's log budget (`ws_fanout.LogBudgets`) caps the log entries
streamed per execution per second, summed over its subscribers: with a thousand subscribers, writing
every line to every socket would take the loop from the engine. What it drops, it drops for
everyone, and says so with the same `LOG_ENTRIES_DROPPED` message.

Here: the hub (the engine subscription, the clients and their subscriptions, when to write, events
to messages, client commands) and the socket handler. `ws_fanout` holds a client's queue and the
log budget; `ws_messages` the JSON of each message.

Who gets what (see api_compat/README.md): every client gets `execution_started`,
`execution_completed`, `artifact_created` and `execution_deleted` (ours) for every execution;
`step_update`, `log_entry` and `error` for every execution until it subscribes (the document's own
Python client never does, and must still see its runs), then only for the executions it subscribed
to (`subscribe` with an id, or `"*"` for all). Log entries stay within the per-execution budget
either way.
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

from api_compat.monitor import ws_messages as msg
from api_compat.monitor.envelope import now_iso
from api_compat.monitor.keys import WS_HUB
from api_compat.monitor.wire import execution_dict, step_dict
from api_compat.monitor.ws_fanout import LogBudgets, WsClient, frame
from api_compat.monitor.ws_messages import error_message, message
from api_compat.request_parsing import InvalidJson, parse_json
from engine.client import EngineClient, Subscription
from engine.events import (
    ArtifactAdded,
    Event,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    LinesDropped,
    LinesLogged,
    Notice,
    StepAdded,
    StepFinished,
    StepStarted,
    StepUpdated,
)
from engine.model import ArtifactFilter, Execution, ExecutionStatus, StepKind, Stream

__all__ = ["WILDCARD", "WsClient", "WsHub", "error_message", "frame", "message", "websocket_handler"]

log = logging.getLogger(__name__)

WILDCARD = "*"
#: seconds before writing again to clients whose transports were full
_RETRY = 0.05
#: seconds log entries are gathered before they are written (fewer, bigger writes to each socket)
_TICK = 0.02
#: ... and status messages: they go out sooner, with whatever else waits
_STATUS_TICK = 0.02
#: after writing to every client that had something, wait this many times as long before the next
_REST_FACTOR = 3
#: kernel send buffer of a WebSocket connection
_SNDBUF = 64 * 1024
#: seconds between pings; a client that sent nothing (not even a pong) for `_PING_TIMEOUT` is closed.
#: Lagging is not silence: a client reading behind a backlog still answers, later.
_PING_EVERY = 30.0
_PING_TIMEOUT = 120.0
#: characters of a stderr line a failed run's `error` quotes
_QUOTED_CHARS = 500


class WsHub:
    """`log_budget`: log entries per second streamed for one execution, summed over the clients that
    want it (see `LogBudgets`); 0: no budget. The rest is dropped for every client, which is told
    (LOG_ENTRIES_DROPPED) before the next entries or status message of that execution. Writing to a
    thousand sockets costs per entry and per client: this keeps the fan-out's cost (and the engine's
    ingestion beside it) bounded."""

    def __init__(self, engine: EngineClient, *, client_queue: int = 2_000, log_budget: int = 20_000) -> None:
        self.engine = engine
        self.client_queue = client_queue
        self.log_budget = log_budget
        self._budgets = LogBudgets(log_budget)
        self._heartbeat: asyncio.Task[None] | None = None
        self.clients: weakref.WeakSet[WsClient] = weakref.WeakSet()
        self._by_execution: dict[str, set[WsClient]] = {}
        self._wildcard: set[WsClient] = set()
        self._ids = itertools.count(1)
        self._subscription: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        #: artifact ids seen in events, per execution still running (the store may lag behind)
        self._artifacts_seen: dict[str, set[str]] = {}
        #: step names by step id, per execution still running: each `log_entry` says its step's name
        self._step_names: dict[str, dict[str, str]] = {}
        #: the last stderr line, per execution still running: a failed run's `error` quotes it
        #: ("exit code 127" alone does not say that the program was not found)
        self._last_stderr: dict[str, str] = {}
        self.total_messages = 0
        self.running = False
        self.accepting = False
        self._dirty: set[WsClient] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_soon = False
        #: loop time before which no flush starts (see _flush)
        self._rested = 0.0

    @property
    def client_count(self) -> int:
        return len(self.clients)

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.running:
            return
        self._subscription = self.engine.subscribe(maxsize=50_000)
        self._pump = asyncio.create_task(self._run(), name="ws-hub")
        self._heartbeat = asyncio.create_task(self._ping_clients(), name="ws-heartbeat")
        self.running = True
        self.accepting = True

    async def stop(self, *, drain_timeout: float = 2.0) -> None:
        """Deliver what the engine already published, then close every client with 1001."""
        self.accepting = False
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._subscription is not None:
            self._subscription.close()
        if self._pump is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._pump), drain_timeout)
            except (TimeoutError, asyncio.CancelledError):
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump
            self._pump = None
        self.running = False
        await self.close_clients()

    async def close_clients(self) -> None:
        clients = list(self.clients)
        if clients:
            await asyncio.gather(*(c.close(WSCloseCode.GOING_AWAY, b"server shutting down") for c in clients),
                                 return_exceptions=True)

    async def _ping_clients(self) -> None:
        """A ping to every client every `_PING_EVERY` s (ahead of its queued log entries); a client
        that sent nothing for `_PING_TIMEOUT` s is gone. aiohttp's own heartbeat closed clients that
        were only slow to read (their pong waits behind what they have not read yet)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_PING_EVERY)
            now = loop.time()
            for client in list(self.clients):
                if client._closing:
                    continue
                if now - client.last_seen > _PING_TIMEOUT:
                    log.info("WebSocket client %s answered no ping for %.0f s; closing it", client.id,
                             now - client.last_seen)
                    loop.create_task(client.close(WSCloseCode.GOING_AWAY, b"no answer to pings"))
                else:
                    client.ping()

    # -- clients -------------------------------------------------------------------------------------
    def register(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None) -> WsClient:
        client = WsClient(self, ws, transport, next(self._ids), self.client_queue)
        self.clients.add(client)
        # until it subscribes, a client gets every execution's events (see the module docstring)
        client.wildcard = True
        client.implicit = True
        self._wildcard.add(client)
        return client

    # -- writing: one flush per loop iteration for every client that has something waiting -------
    def mark_dirty(self, client: WsClient, *, soon: bool = False) -> None:
        """Writes are gathered for a short moment (one write per client per tick, not per event):
        `_TICK` for log entries, `_STATUS_TICK` once a status message waits."""
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

    def unregister(self, client: WsClient) -> None:
        self.clients.discard(client)
        self._dirty.discard(client)
        self._wildcard.discard(client)
        for execution_id in client.subscriptions:
            subs = self._by_execution.get(execution_id)
            if subs is not None:
                subs.discard(client)
                if not subs:
                    del self._by_execution[execution_id]
        client.subscriptions.clear()

    def _narrow(self, client: WsClient) -> None:
        """The first `subscribe` (or unsubscribing "*") ends the implicit "everything" of a new client."""
        if client.implicit:
            client.implicit = False
            client.wildcard = False
            self._wildcard.discard(client)

    def subscribe(self, client: WsClient, execution_id: str) -> None:
        self._narrow(client)
        if execution_id == WILDCARD:
            client.wildcard = True
            self._wildcard.add(client)
        else:
            client.subscriptions.add(execution_id)
            self._by_execution.setdefault(execution_id, set()).add(client)

    def unsubscribe(self, client: WsClient, execution_id: str) -> None:
        if execution_id == WILDCARD:
            # "*" off: nothing more for a client that never subscribed either
            self._narrow(client)
            client.wildcard = False
            self._wildcard.discard(client)
            return
        client.subscriptions.discard(execution_id)
        subs = self._by_execution.get(execution_id)
        if subs is not None:
            subs.discard(client)
            if not subs:
                del self._by_execution[execution_id]

    def interested(self, execution_id: str) -> Collection[WsClient]:
        subs = self._by_execution.get(execution_id)
        if not subs:
            return self._wildcard
        if not self._wildcard:
            return subs
        return self._wildcard | subs

    def broadcast(self, text: str) -> None:
        blob = frame(text)
        for client in self.clients:
            client.send(blob)

    # -- events -> messages -------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._subscription is not None
        try:
            async for event in self._subscription:
                try:
                    await self.dispatch(event)
                except Exception:
                    log.exception("turning %s into WebSocket messages failed", type(event).__name__)
        finally:
            self.running = False

    async def dispatch(self, event: Event) -> None:
        if isinstance(event, LinesLogged):
            if event.stream is Stream.STDERR and event.lines:
                self._last_stderr[event.exec_id] = event.lines[-1][:_QUOTED_CHARS]
            targets = self.interested(event.exec_id)
            if not targets:
                return
            total = len(event.lines)
            count = self._budgets.allow(event.exec_id, len(targets), total)
            if count:
                targets = tuple(targets)
                self._tell_dropped(event.exec_id, targets)
            if count < total:
                self._budgets.note_dropped(event.exec_id, event.start_seq + count, event.start_seq + total - 1)
            if not count:
                return
            step_name = self._step_names.get(event.exec_id, {}).get(event.step_id or "")
            blob = b"".join(frame(text) for text in msg.log_entries(event, count, step_name))
            for client in targets:
                client.send_droppable(event.exec_id, blob, count, event.start_seq)
        elif isinstance(event, (StepStarted, StepFinished, StepAdded)):
            self._step_names.setdefault(event.step.execution_id, {})[event.step.id] = event.step.name
            if event.step.kind is StepKind.BRANCH:
                # a branch is no step of the API's (its steps carry its `target`): only for the
                # clients that asked for the tree
                blob = frame(msg.step_update(event.step))
                for client in tuple(self.interested(event.step.execution_id)):
                    if client.branches:
                        client.send(blob)
            else:
                self._to_interested(event.step.execution_id, msg.step_update(event.step))
        elif isinstance(event, StepUpdated):
            if event.step.kind is StepKind.BRANCH:
                return  # progress of a branch: no client's concern
            targets = self.interested(event.step.execution_id)
            if targets:
                blob = frame(msg.step_update(event.step))
                for client in tuple(targets):
                    client.send_droppable(event.step.execution_id, blob, 1)
        elif isinstance(event, ExecutionStarted):
            ex = event.execution
            self._artifacts_seen.setdefault(ex.id, set())
            self.broadcast(msg.execution_started(ex))
        elif isinstance(event, ExecutionFinished):
            ex = event.execution
            completed = await self._completed_message(ex)
            self._step_names.pop(ex.id, None)
            last_stderr = self._last_stderr.pop(ex.id, None)
            if ex.status is ExecutionStatus.FAILED:
                self._to_interested(ex.id, msg.run_failed(ex, last_stderr))
            else:
                self._tell_dropped(ex.id, tuple(self.interested(ex.id)))
            self._budgets.forget(ex.id)
            self.broadcast(completed)
        elif isinstance(event, ExecutionDeleted):
            # ours: without it a client's list keeps what is gone (a remote TUI drops the row)
            self._artifacts_seen.pop(event.id, None)
            self._step_names.pop(event.id, None)
            self._last_stderr.pop(event.id, None)
            self._budgets.forget(event.id)
            self.broadcast(msg.execution_deleted(event.id))
        elif isinstance(event, ArtifactAdded):
            art = event.artifact
            self._artifacts_seen.setdefault(art.execution_id, set()).add(art.id)
            self.broadcast(msg.artifact_created(art))
        elif isinstance(event, Notice):
            if event.level.lower() == "error":
                self._to_interested(event.exec_id, error_message(
                    "EXECUTION_ERROR", event.message, event.exec_id, step_id=event.step_id,
                ))
        elif isinstance(event, LinesDropped):
            # the hub's own engine subscription lagged: tell the clients that wanted those lines
            for client in tuple(self.interested(event.exec_id)):
                client.note_dropped(event.exec_id, event.count)

    def _to_interested(self, execution_id: str, text: str) -> None:
        blob = frame(text)
        targets = tuple(self.interested(execution_id))
        self._tell_dropped(execution_id, targets)
        for client in targets:
            client.send(blob)

    def _tell_dropped(self, execution_id: str, targets: tuple[WsClient, ...]) -> None:
        """Before the next message of an execution: what the budget dropped since the last one."""
        dropped = self._budgets.take_dropped(execution_id)
        if dropped is None:
            return
        count, first, last = dropped
        notice = frame(msg.dropped_message(execution_id, count, first, last,
                                           "to keep the stream within the server's log budget"))
        for client in targets:
            client.send_notice(execution_id, notice, count, first, last)

    async def _completed_message(self, ex: Execution) -> str:
        seen = self._artifacts_seen.pop(ex.id, set())
        try:
            stored, _total = await self.engine.list_artifacts(ArtifactFilter(execution_id=ex.id, limit=1000))
            count = len(seen | {a.id for a in stored})
        except Exception:
            log.exception("counting the artifacts of %s failed", ex.id)
            count = len(seen)
        return msg.execution_completed(ex, count)

    # -- client commands ------------------------------------------------------------------------------
    async def handle_command(self, client: WsClient, raw: str) -> None:
        try:
            payload = parse_json(raw)
        except InvalidJson as exc:
            client.send(error_message("INVALID_MESSAGE", f"the message is not JSON: {exc}"))
            return
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            client.send(error_message("INVALID_MESSAGE", 'a message is a JSON object with a "type"'))
            return
        kind = payload["type"]
        data = payload.get("data")
        if data is None:
            data = {}
        if not isinstance(data, dict):
            client.send(error_message("INVALID_MESSAGE", '"data" must be a JSON object'))
            return
        # the reference web client nests execution_id in data; its server read it at the top level
        execution_id = data.get("execution_id", payload.get("execution_id"))
        if execution_id is not None and not isinstance(execution_id, str):
            client.send(error_message("INVALID_MESSAGE", "execution_id must be a string"))
            return
        if kind == "ping":
            client.send(message("pong", {"timestamp": now_iso()}))
        elif kind in ("subscribe", "subscribe_execution", "unsubscribe"):
            if not execution_id:
                client.send(error_message("INVALID_MESSAGE", f"{kind} needs data.execution_id"))
                return
            if kind == "unsubscribe":
                self.unsubscribe(client, execution_id)
                client.send(message("unsubscribed", {"execution_id": execution_id}))
                return
            if execution_id != WILDCARD and await self.engine.get_execution(execution_id) is None:
                client.send(error_message("NOT_FOUND", f"execution {execution_id} not found", execution_id))
                return
            self.subscribe(client, execution_id)
            client.send(message("subscribed", {"execution_id": execution_id}))
        elif kind == "get_status":
            if not execution_id:
                client.send(message("server_status", {
                    "running": self.running, "connected_clients": self.client_count, "timestamp": now_iso(),
                }))
                return
            execution = await self.engine.get_execution(execution_id)
            if execution is None:
                client.send(error_message("NOT_FOUND", f"execution {execution_id} not found", execution_id))
                return
            steps = await self.engine.get_steps(execution_id)
            client.send(message("execution_status", {
                "execution_id": execution_id,
                "execution": execution_dict(execution),
                "steps": [step_dict(s) for s in steps],
            }))
        else:
            client.send(error_message("UNKNOWN_MESSAGE_TYPE", f"unknown message type {kind!r}"))


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    hub = request.app[WS_HUB]
    if not hub.accepting:
        raise web.HTTPServiceUnavailable(reason="the server is shutting down")
    # no permessage-deflate: one frame's bytes are then the same for every client
    # no aiohttp heartbeat (the hub pings, see WsHub._ping_clients); pings answered here
    ws = web.WebSocketResponse(autoping=False, max_msg_size=1024 * 1024, compress=False)
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
    client = hub.register(ws, transport)  # type: ignore[arg-type]
    client.branches = request.query.get("branches") == "true"
    loop = asyncio.get_running_loop()
    client.send(message("connection_established", {
        "client_id": client.id, "server_time": now_iso(), "connected_clients": hub.client_count,
    }))
    try:
        async for msg in ws:
            client.last_seen = loop.time()
            if msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                pass
            elif msg.type is WSMsgType.TEXT:
                try:
                    await hub.handle_command(client, msg.data)
                except Exception:
                    log.exception("handling a WebSocket command failed")
                    client.send(error_message("INTERNAL_ERROR", "the command failed (see the server log)"))
            elif msg.type is WSMsgType.BINARY:
                client.send(error_message("INVALID_MESSAGE", "send JSON text messages, not binary"))
            elif msg.type is WSMsgType.ERROR:
                break
    finally:
        hub.unregister(client)
    return ws

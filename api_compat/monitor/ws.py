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

Before any client's queue, the hub's log budget (`api_compat.ws_fanout.LogBudgets`) caps the log entries
streamed per execution per second, summed over its subscribers: with a thousand subscribers, writing
every line to every socket would take the loop from the engine. What it drops, it drops for
everyone, and says so with the same `LOG_ENTRIES_DROPPED` message.

Here: Monitor's hub (the engine subscription, events to messages, client commands) and the socket
handler. The shared `api_compat.ws_fanout` holds the rest (the clients and their subscriptions,
each client's queue, when to write, the log budget, pings, closing); `ws_messages` the JSON of each
message.

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
import logging

from aiohttp import web

from api_compat.monitor import ws_messages as msg
from api_compat.monitor.envelope import now_iso
from api_compat.monitor.keys import WS_HUB
from api_compat.monitor.wire import execution_dict, step_dict
from api_compat.monitor.ws_messages import error_message, message
from api_compat.request_parsing import InvalidJson, parse_json
from api_compat.ws_fanout import WILDCARD, FanoutHub, WsClient, frame
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

__all__ = ["WILDCARD", "MonitorClient", "WsHub", "error_message", "frame", "message", "websocket_handler"]

log = logging.getLogger(__name__)

#: seconds between pings; a client that sent nothing (not even a pong) for `_PING_TIMEOUT` is closed
_PING_EVERY = 30.0
_PING_TIMEOUT = 120.0
#: characters of a stderr line a failed run's `error` quotes
_QUOTED_CHARS = 500


class MonitorClient(WsClient):
    __slots__ = ("branches",)

    def __init__(self, hub: FanoutHub, ws: web.WebSocketResponse, transport: asyncio.Transport | None,
                 client_id: int, limit: int) -> None:
        super().__init__(hub, ws, transport, client_id, limit)
        #: ours (`/ws?branches=true`, a remote TUI): also the branch steps' `step_update`
        self.branches = False


class WsHub(FanoutHub):
    """`log_budget`: log entries per second streamed for one execution, summed over the clients that
    want it (see `LogBudgets`); 0: no budget. The rest is dropped for every client, which is told
    (LOG_ENTRIES_DROPPED) before the next entries or status message of that execution. Writing to a
    thousand sockets costs per entry and per client: this keeps the fan-out's cost (and the engine's
    ingestion beside it) bounded."""

    client_class = MonitorClient

    def __init__(self, engine: EngineClient, *, client_queue: int = 2_000, log_budget: int = 20_000,
                 drain_timeout: float = 2.0) -> None:
        super().__init__(client_queue=client_queue, log_budget=log_budget, ping_every=_PING_EVERY,
                         ping_timeout=_PING_TIMEOUT)
        self.engine = engine
        self.drain_timeout = drain_timeout
        self._subscription: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        #: artifact ids seen in events, per execution still running (the store may lag behind)
        self._artifacts_seen: dict[str, set[str]] = {}
        #: step names by step id, per execution still running: each `log_entry` says its step's name
        self._step_names: dict[str, dict[str, str]] = {}
        #: the last stderr line, per execution still running: a failed run's `error` quotes it
        #: ("exit code 127" alone does not say that the program was not found)
        self._last_stderr: dict[str, str] = {}
        self.running = False

    # -- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.running:
            return
        self._subscription = self.engine.subscribe(maxsize=50_000)
        self._pump = asyncio.create_task(self._run(), name="ws-hub")
        await super().start()
        self.running = True

    async def drain(self) -> None:
        """Deliver what the engine already published (the sockets close with 1001 after it)."""
        if self._subscription is not None:
            self._subscription.close()
        if self._pump is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._pump), self.drain_timeout)
            except (TimeoutError, asyncio.CancelledError):
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump
            self._pump = None
        self.running = False

    # -- what Monitor says ---------------------------------------------------------------------------
    def drop_notice(self, topic: str, count: int, first: int, last: int, why: str) -> str:
        return msg.dropped_message(topic, count, first, last, why)

    def on_open(self, client: WsClient, request: web.Request) -> None:
        assert isinstance(client, MonitorClient)
        client.branches = request.query.get("branches") == "true"
        client.send(message("connection_established", {
            "client_id": client.id, "server_time": now_iso(), "connected_clients": self.client_count,
        }))

    async def on_text(self, client: WsClient, text: str) -> None:
        await self.handle_command(client, text)

    def on_binary(self, client: WsClient) -> None:
        client.send(error_message("INVALID_MESSAGE", "send JSON text messages, not binary"))

    def on_failure(self, client: WsClient) -> None:
        client.send(error_message("INTERNAL_ERROR", "the command failed (see the server log)"))

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
            targets, count = self.budgeted(event.exec_id, len(event.lines), event.start_seq)
            if not count:
                return
            step_name = self._step_names.get(event.exec_id, {}).get(event.step_id or "")
            blob = b"".join(frame(text) for text in msg.log_entries(event, count, step_name))
            for client in targets:
                client.send_droppable(event.exec_id, blob, count, event.start_seq)
        elif isinstance(event, (StepStarted, StepFinished, StepAdded)):
            self._step_names.setdefault(event.step.execution_id, {})[event.step.id] = event.step.name
            if not self.clients:
                return  # the messages only when someone listens: a server may run without any
            if event.step.kind is StepKind.BRANCH:
                # a branch is no step of the API's (its steps carry its `target`): only for the
                # clients that asked for the tree
                blob = frame(msg.step_update(event.step))
                for client in tuple(self.interested(event.step.execution_id)):
                    if isinstance(client, MonitorClient) and client.branches:
                        client.send(blob)
            else:
                self.to_interested(event.step.execution_id, msg.step_update(event.step))
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
            if self.clients:
                self.broadcast(msg.execution_started(ex))
        elif isinstance(event, ExecutionFinished):
            ex = event.execution
            if not self.clients:
                # nobody to tell: no message, nor the read of its artifacts that counts them
                for kept in (self._artifacts_seen, self._step_names, self._last_stderr):
                    kept.pop(ex.id, None)
                self.forget(ex.id)
                return
            completed = await self._completed_message(ex)
            self._step_names.pop(ex.id, None)
            last_stderr = self._last_stderr.pop(ex.id, None)
            if ex.status is ExecutionStatus.FAILED:
                self.to_interested(ex.id, msg.run_failed(ex, last_stderr))
            else:
                self.tell_dropped(ex.id, tuple(self.interested(ex.id)))
            self.forget(ex.id)
            self.broadcast(completed)
        elif isinstance(event, ExecutionDeleted):
            # ours: without it a client's list keeps what is gone (a remote TUI drops the row)
            self._artifacts_seen.pop(event.id, None)
            self._step_names.pop(event.id, None)
            self._last_stderr.pop(event.id, None)
            self.forget(event.id)
            self.broadcast(msg.execution_deleted(event.id))
        elif isinstance(event, ArtifactAdded):
            art = event.artifact
            self._artifacts_seen.setdefault(art.execution_id, set()).add(art.id)
            self.broadcast(msg.artifact_created(art))
        elif isinstance(event, Notice):
            if event.level.lower() == "error":
                self.to_interested(event.exec_id, error_message(
                    "EXECUTION_ERROR", event.message, event.exec_id, step_id=event.step_id,
                ))
        elif isinstance(event, LinesDropped):
            # the hub's own engine subscription lagged: tell the clients that wanted those lines
            for client in tuple(self.interested(event.exec_id)):
                client.note_dropped(event.exec_id, event.count)

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
    return await request.app[WS_HUB].serve(request)

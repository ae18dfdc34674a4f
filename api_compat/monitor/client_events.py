"""The event side of `RemoteEngine` (`api_compat.monitor.client`): ONE WebSocket to `/ws`, subscribed to
every execution (`"*"`), opened on the first `subscribe()`. Its messages are turned back into
`engine.events` and offered to each subscriber's own bounded queue (`engine.hub.Subscriber`: a
lagging subscriber loses log lines, never status events). The socket reconnects with backoff; once
back, what was missed is read over REST (through the client) and replayed as events, so a
subscriber's picture converges instead of going stale."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp

from api_compat.monitor.wire_decode import artifact_from_dict, enum_or, parse_time, step_from_dict
from api_compat.monitor.wire_decode import line_from_dict as line_from
from engine.client import Subscription
from engine.errors import EngineError
from engine.events import (
    ArtifactAdded,
    Event,
    ExecutionCreated,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
    LinesDropped,
    LinesLogged,
    Notice,
    StepAdded,
    StepFinished,
    StepStarted,
    StepUpdated,
)
from engine.hub import Hub
from engine.model import (
    AbortReason,
    Artifact,
    Execution,
    ExecutionFilter,
    ExecutionStatus,
    LogLine,
    Step,
    StepKind,
    StepStatus,
    utcnow,
)

if TYPE_CHECKING:
    from api_compat.monitor.client import RemoteEngine

log = logging.getLogger(__name__)

#: seconds an ExecutionUpdated (counters, progress) waits so a burst of step changes costs one read
_REFRESH_DELAY = 0.25
#: the server's cap on the log lines of one request (LogLinesQuery)
LOG_PAGE = 10_000


def lines_events(lines: Sequence[LogLine]) -> list[LinesLogged]:
    """Log lines as `LinesLogged` events: consecutive lines of one step, stream and moment together
    (which is how the engine published them)."""
    events: list[LinesLogged] = []
    run: list[LogLine] = []

    def close_run() -> None:
        if run:
            first = run[0]
            events.append(LinesLogged(exec_id=first.execution_id, step_id=first.step_id, stream=first.stream,
                                      start_seq=first.seq, timestamp=first.timestamp,
                                      lines=tuple(line.text for line in run)))
            run.clear()

    for line in lines:
        if run:
            last = run[-1]
            if (line.seq != last.seq + 1 or line.step_id != last.step_id or line.stream is not last.stream
                    or line.timestamp != last.timestamp):
                close_run()
        run.append(line)
    close_run()
    return events


class _Fanout(Hub):
    """The hub's per-subscriber bounded queues, fed with `offer` only (nothing persists here)."""


@dataclass(slots=True)
class _Tracked:
    """What the events have told of an execution that has not finished yet."""

    #: the last status each step was seen in
    steps: dict[str, StepStatus] = field(default_factory=dict)
    #: the newest log line delivered; None until one is (joined mid-run: earlier lines unknown)
    last_seq: int | None = None
    #: the server reported dropped lines without saying which: do not report the gap twice
    gap_reported: bool = False


class RemoteEvents:
    """Owns the socket, the subscribers' queues and what the events told of each execution."""

    def __init__(self, client: RemoteEngine) -> None:
        self.client = client
        self._fanout = _Fanout()
        self._pump: asyncio.Task[None] | None = None
        #: set once the socket has subscribed the first time (commands wait for it: no missed events)
        self._ready = asyncio.Event()
        self._connected = False
        self._tracked: dict[str, _Tracked] = {}
        #: executions whose ExecutionCreated went out (insertion-ordered, trimmed)
        self._announced: dict[str, None] = {}
        #: executions whose ExecutionDeleted went out (the REST answer and the socket both tell it)
        self._deleted: dict[str, None] = {}
        self._refreshing: dict[str, asyncio.Handle | asyncio.Task[None]] = {}

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def was_ready(self) -> bool:
        """The socket subscribed at least once (so it is lost now, if not connected)."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> None:
        """Until the socket's first subscription (at most `timeout` s); at once without a socket."""
        if self._pump is None or self._ready.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    def deleted(self, execution_id: str) -> None:
        """The client deleted it: subscribers hear of it at once, whatever the socket says."""
        self._on_deleted(execution_id)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
            self._pump = None
        for pending in self._refreshing.values():
            pending.cancel()
        self._refreshing.clear()
        self._fanout.close()
        self._connected = False

    def subscribe(self, maxsize: int) -> Subscription:
        """A new subscriber; the first one opens the shared WebSocket."""
        sub = self._fanout.subscribe(maxsize)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_socket(), name="remote-events")
        return sub

    async def _run_socket(self) -> None:
        delay = 0.1
        lost_at: datetime | None = None
        while not self.client._closing:
            session = self.client._require_session()
            try:
                async with session.ws_connect(self.client.ws_url, heartbeat=20.0, max_msg_size=16 * 1024 * 1024,
                                              timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws:
                    await ws.send_json({"type": "subscribe", "data": {"execution_id": "*"}})
                    async for msg in ws:
                        if msg.type is not aiohttp.WSMsgType.TEXT:
                            if msg.type is aiohttp.WSMsgType.ERROR:
                                break
                            continue
                        try:
                            payload = json.loads(msg.data)
                        except json.JSONDecodeError:
                            log.warning("ignoring a WebSocket message that is not JSON")
                            continue
                        if not isinstance(payload, dict):
                            continue
                        if payload.get("type") == "subscribed":
                            self._connected = True
                            delay = 0.1
                            if lost_at is not None:
                                await self._catch_up(lost_at)
                                lost_at = None
                            self._ready.set()
                            continue
                        try:
                            await self._dispatch(payload)
                        except asyncio.CancelledError:
                            raise
                        except Exception:
                            log.exception("turning a %r message into events failed", payload.get("type"))
                    log.info("event socket to %s closed (%s)", self.client.ws_url, ws.close_code)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("event socket to %s: %s", self.client.ws_url, exc)
            except Exception:
                log.exception("event socket to %s failed", self.client.ws_url)
            if self._connected or (lost_at is None and self._ready.is_set()):
                lost_at = utcnow()
            self._connected = False
            if self.client._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.client._max_delay)

    def _track(self, execution_id: str) -> _Tracked:
        tracked = self._tracked.get(execution_id)
        if tracked is None:
            tracked = self._tracked[execution_id] = _Tracked()
        return tracked

    def _mark_announced(self, execution_id: str) -> bool:
        """True the first time: this execution's ExecutionCreated is to go out now."""
        if execution_id in self._announced:
            return False
        self._announced[execution_id] = None
        if len(self._announced) > 10_000:
            for old in list(self._announced)[:5_000]:
                del self._announced[old]
        return True

    async def _dispatch(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        data = payload.get("data")
        if not isinstance(data, dict):
            return
        execution_id = data.get("execution_id")
        if kind == "log_entry" and execution_id:
            self._on_log_entry(execution_id, data)
        elif kind == "step_update" and execution_id and isinstance(data.get("step"), dict):
            step = step_from_dict(data["step"], execution_id)
            for event in self._step_events(self._track(execution_id), step):
                self._fanout.offer(event)
            if step.status.is_terminal or step.kind is StepKind.MARKER:
                self._refresh_soon(execution_id)
        elif kind == "execution_started" and execution_id:
            await self._on_started(execution_id, data)
        elif kind == "execution_completed" and execution_id:
            await self._on_completed(execution_id, data)
        elif kind == "artifact_created" and execution_id and isinstance(data.get("artifact"), dict):
            await self._on_artifact(execution_id, data["artifact"])
        elif kind == "execution_deleted" and execution_id:
            self._on_deleted(execution_id)
        elif kind == "error":
            self._on_error(execution_id, data)

    def _on_log_entry(self, execution_id: str, data: dict[str, Any]) -> None:
        line = line_from(data, execution_id)
        tracked = self._track(execution_id)
        last = tracked.last_seq
        if last is not None:
            if line.seq <= last:
                return  # already delivered (by the catch-up after a reconnection)
            if line.seq > last + 1:
                if not tracked.gap_reported:
                    self._fanout.offer(LinesDropped(exec_id=execution_id, count=line.seq - last - 1))
        tracked.gap_reported = False
        tracked.last_seq = line.seq
        self._fanout.offer(LinesLogged(exec_id=execution_id, step_id=line.step_id, stream=line.stream,
                                       start_seq=line.seq, timestamp=line.timestamp, lines=(line.text,)))

    @staticmethod
    def _step_events(tracked: _Tracked, step: Step, *, changes_only: bool = False) -> list[Event]:
        """A step's new state as the engine would have told it: StepAdded for a marker step not
        seen before (workflow steps and branches exist from the start), else by status change."""
        previous = tracked.steps.get(step.id)
        tracked.steps[step.id] = step.status
        if previous is None and step.kind is StepKind.MARKER:
            events: list[Event] = [StepAdded(step)]
            if step.status.is_terminal:
                events.append(StepFinished(step))
            return events
        if previous is step.status:
            return [] if changes_only else [StepUpdated(step)]
        if step.status is StepStatus.RUNNING:
            return [StepStarted(step)]
        if step.status.is_terminal:
            return [StepFinished(step)]
        return [StepUpdated(step)]

    async def _announce(self, execution_id: str) -> tuple[Execution, list[Step]] | None:
        """Read an execution that just appeared; offer its ExecutionCreated (once)."""
        try:
            detail = await self.client._detail(execution_id)
        except EngineError as exc:
            log.warning("reading new execution %s failed: %s", execution_id, exc.message)
            detail = None
        if self._mark_announced(execution_id):
            if detail is not None:
                execution, steps = detail
                initial = tuple(s for s in steps if s.kind is not StepKind.MARKER)
                self._fanout.offer(ExecutionCreated(execution, initial))
        return detail

    async def _on_started(self, execution_id: str, data: dict[str, Any]) -> None:
        self._track(execution_id)
        detail = await self._announce(execution_id)
        if detail is not None:
            execution = detail[0]
        else:
            execution = Execution(id=execution_id, name=data.get("name") or "", command=data.get("command") or "")
        if not execution.status.is_terminal and execution.status is not ExecutionStatus.RUNNING:
            execution.status = ExecutionStatus.RUNNING
        if execution.started_at is None:
            execution.started_at = parse_time(data.get("started_at")) or utcnow()
        self._fanout.offer(ExecutionStarted(execution))

    async def _on_completed(self, execution_id: str, data: dict[str, Any]) -> None:
        self._cancel_refresh(execution_id)
        try:
            execution = await self.client.get_execution(execution_id)
        except EngineError as exc:
            log.warning("reading finished execution %s failed: %s", execution_id, exc.message)
            execution = None
        if execution is None:
            execution = Execution(id=execution_id, name="")
        if not execution.status.is_terminal:
            # the answer lagged behind the message: the message's fields are the end
            execution.status = enum_or(ExecutionStatus, data.get("status"), ExecutionStatus.FAILED)  # type: ignore[assignment]
            execution.exit_code = data.get("exit_code")
            execution.completed_at = parse_time(data.get("completed_at")) or utcnow()
            execution.error_message = data.get("error_message")
            execution.abort_reason = enum_or(AbortReason, data.get("abort_reason"))
            execution.total_steps = data.get("total_steps") or execution.total_steps
        self._tracked.pop(execution_id, None)
        self._fanout.offer(ExecutionFinished(execution))

    async def _on_artifact(self, execution_id: str, data: dict[str, Any]) -> None:
        artifact: Artifact | None = None
        try:
            artifact = await self.client.get_artifact(data["id"])
        except EngineError as exc:
            log.warning("reading artifact %s failed: %s", data.get("id"), exc.message)
        if artifact is None:
            # the server's store has not written it yet: what the message says
            artifact = artifact_from_dict(data, execution_id)
        self._fanout.offer(ArtifactAdded(artifact))

    def _on_deleted(self, execution_id: str) -> None:
        """ExecutionDeleted, once per execution (ids are never reused)."""
        self._cancel_refresh(execution_id)
        self._tracked.pop(execution_id, None)
        if execution_id in self._deleted:
            return
        self._deleted[execution_id] = None
        if len(self._deleted) > 10_000:
            for old in list(self._deleted)[:5_000]:
                del self._deleted[old]
        self._fanout.offer(ExecutionDeleted(execution_id))

    def _on_error(self, execution_id: str | None, data: dict[str, Any]) -> None:
        code = data.get("error_code")
        message = str(data.get("error_message") or "")
        if code == "LOG_ENTRIES_DROPPED" and execution_id:
            tracked = self._track(execution_id)
            count = int(data.get("dropped_count") or 0)
            last_seq = data.get("last_seq")
            if isinstance(last_seq, int):
                tracked.last_seq = max(tracked.last_seq if tracked.last_seq is not None else -1, last_seq)
            else:
                tracked.gap_reported = True
            self._fanout.offer(LinesDropped(exec_id=execution_id, count=count))
        elif code == "EXECUTION_ERROR" and execution_id:
            self._fanout.offer(Notice(exec_id=execution_id, step_id=data.get("step_id"), level="error",
                                      message=message))
        else:
            log.info("server says %s: %s", code, message)

    # -- counters: the socket does not carry ExecutionUpdated; read it after a burst of step changes --
    def _refresh_soon(self, execution_id: str) -> None:
        if execution_id in self._refreshing or self.client._closing:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._refreshing[execution_id] = loop.create_task(self._refresh(execution_id))

        self._refreshing[execution_id] = loop.call_later(_REFRESH_DELAY, fire)

    def _cancel_refresh(self, execution_id: str) -> None:
        pending = self._refreshing.pop(execution_id, None)
        if pending is not None:
            pending.cancel()

    async def _refresh(self, execution_id: str) -> None:
        try:
            execution = await self.client.get_execution(execution_id)
        except EngineError:
            execution = None
        finally:
            self._refreshing.pop(execution_id, None)
        # finished meanwhile: its ExecutionFinished says the rest (an update now would go back in time)
        if execution is not None and not execution.status.is_terminal and execution_id in self._tracked:
            self._fanout.offer(ExecutionUpdated(execution))

    # -- after a reconnection: replay what was missed ------------------------------------------------
    async def _catch_up(self, lost_at: datetime) -> None:
        for execution_id, tracked in list(self._tracked.items()):
            try:
                await self._catch_up_execution(execution_id, tracked)
            except EngineError as exc:
                log.warning("catching up with %s failed: %s", execution_id, exc.message)
        try:
            recent, _total = await self.client.list_executions(ExecutionFilter(limit=100))
        except EngineError as exc:
            log.warning("listing executions after a reconnection failed: %s", exc.message)
            return
        since = lost_at - timedelta(seconds=2)
        for execution in reversed(recent):  # oldest first
            if execution.id in self._announced or execution.id in self._tracked or execution.created_at < since:
                continue
            detail = await self._announce(execution.id)
            if detail is None:
                continue
            execution, _steps = detail
            if execution.status is ExecutionStatus.PENDING:
                self._track(execution.id)
                continue
            self._fanout.offer(ExecutionStarted(execution))
            if execution.status.is_terminal:
                self._fanout.offer(ExecutionFinished(execution))
            else:
                self._track(execution.id)

    async def _catch_up_execution(self, execution_id: str, tracked: _Tracked) -> None:
        detail = await self.client._detail(execution_id)
        if detail is None:
            self._on_deleted(execution_id)
            return
        execution, steps = detail
        for step in sorted(steps, key=lambda s: s.index):
            for event in self._step_events(tracked, step, changes_only=True):
                self._fanout.offer(event)
        if tracked.last_seq is not None:
            lines = await self.client.get_log_lines(execution_id, after_seq=tracked.last_seq, limit=LOG_PAGE)
            for event in lines_events(lines):
                self._fanout.offer(event)
            if lines:
                tracked.last_seq = lines[-1].seq
            if len(lines) == LOG_PAGE:
                total = await self.client.count_log_lines(execution_id)
                missing = total - (tracked.last_seq + 1)
                if missing > 0:
                    self._fanout.offer(LinesDropped(exec_id=execution_id, count=missing))
                    tracked.last_seq = total - 1
        if execution.status.is_terminal:
            self._tracked.pop(execution_id, None)
            self._fanout.offer(ExecutionFinished(execution))
        else:
            self._fanout.offer(ExecutionUpdated(execution))

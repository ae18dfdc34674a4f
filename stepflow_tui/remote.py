"""`RemoteEngine`: the engine client over the StepFlow Monitor HTTP/WebSocket API, for
`stepflow tui --connect URL`.

Commands and reads are REST calls (the documented routes, plus ours: cancel, rerun, logs, workflows).
Events come from ONE WebSocket to `/ws` on the main port, subscribed to every execution (`"*"`),
opened on the first `subscribe()`; its messages are turned back into `engine.events` and offered to
each subscriber's own bounded queue (`engine.hub.Subscriber`: a lagging subscriber loses log lines,
never status events). The socket reconnects with backoff; once back, what was missed is read over
REST and replayed as events (status changes, the missing log lines, executions that appeared), so
a subscriber's picture converges instead of going stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from engine.client import Subscription
from engine.errors import Conflict, EngineError, InvalidRequest, NotFound, ShuttingDown
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
    ArtifactFilter,
    Execution,
    ExecutionFilter,
    ExecutionStatus,
    LogLine,
    Step,
    StepKind,
    StepStatus,
    utcnow,
)
from engine.views_decode import (
    artifact_from_dict,
    enum_or,
    execution_from_dict,
    parse_time,
    step_from_dict,
)
from engine.views_decode import line_from_dict as line_from
from engine.workflow import WorkflowError, WorkflowIssue

log = logging.getLogger(__name__)

#: the server's caps per request (ListExecutionsQuery, ListArtifactsQuery, LogLinesQuery)
_LIST_PAGE = 1000
_LOG_PAGE = 10_000
#: `file:line:column: message`, as `WorkflowIssue.__str__` writes it
_ISSUE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): (?P<message>.*)$")
#: the file name the engine gives a workflow sent as text
_TEXT_WORKFLOW = "<workflow>"
#: seconds an ExecutionUpdated (counters, progress) waits so a burst of step changes costs one read
_REFRESH_DELAY = 0.25


class RemoteUnavailable(EngineError):
    """The server did not answer (refused, reset, timed out)."""

    title = "Cannot reach server"


class NotAuthorized(EngineError):
    """The server wants a (valid) bearer token."""

    title = "Not authorized"


class RemoteFailure(EngineError):
    """The server answered with an error that is none of the engine's (a 500...)."""

    title = "Server error"


# -- JSON -> events -------------------------------------------------------------------------------
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


def workflow_error(message: str, *, text_file: str | None = None) -> WorkflowError | None:
    """The `WorkflowError` a server's message stands for, when every line reads `file:line:col: msg`
    (a line that does not continues the previous message). `text_file` renames the file the engine
    calls a workflow sent as text."""
    issues: list[WorkflowIssue] = []
    for raw in message.splitlines():
        m = _ISSUE.match(raw)
        if m is None:
            if not issues:
                return None
            last = issues[-1]
            issues[-1] = dataclasses.replace(last, message=f"{last.message}\n{raw}")
            continue
        file = m["file"]
        if text_file is not None and file == _TEXT_WORKFLOW:
            file = text_file
        issues.append(WorkflowIssue(file, int(m["line"]), int(m["column"]), m["message"]))
    return WorkflowError(issues) if issues else None


def _local_file(path: str | Path) -> Path | None:
    """`path` made absolute when it is a file on this machine, else None."""
    local = Path(path).expanduser()
    return local.resolve() if local.is_file() else None


def _error(status: int, message: str) -> EngineError:
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status in (400, 413, 422):
        return InvalidRequest(message)
    if status == 503:
        return ShuttingDown(message)
    if status in (401, 403):
        return NotAuthorized(message)
    return RemoteFailure(f"HTTP {status}: {message}")


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


# -- the client ------------------------------------------------------------------------------------
class RemoteEngine:
    """`engine.client.EngineClient` over HTTP and WebSocket. `await start()` (or `async with`)
    opens the session and checks the server; `close()` ends everything, subscriptions included."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_reconnect_delay: float = 5.0,
    ) -> None:
        url = base_url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        url = url.removesuffix("/api")
        self.base_url = url
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout)
        self._connect_timeout = connect_timeout
        self._max_delay = max_reconnect_delay
        self._session: aiohttp.ClientSession | None = None
        self._fanout = _Fanout()
        self._pump: asyncio.Task[None] | None = None
        #: set once the socket has subscribed the first time (commands wait for it: no missed events)
        self._ready = asyncio.Event()
        self._connected = False
        self._closing = False
        self._tracked: dict[str, _Tracked] = {}
        #: executions whose ExecutionCreated went out (insertion-ordered, trimmed)
        self._announced: dict[str, None] = {}
        #: executions whose ExecutionDeleted went out (the REST answer and the socket both tell it)
        self._deleted: dict[str, None] = {}
        self._refreshing: dict[str, asyncio.Handle | asyncio.Task[None]] = {}

    # -- life cycle ----------------------------------------------------------------------------------
    @property
    def description(self) -> str:
        return self.base_url

    @property
    def ws_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/ws"

    @property
    def connected(self) -> bool:
        """Whether the event socket is up (False before the first `subscribe()`)."""
        return self._connected

    @property
    def connection_state(self) -> str:
        """For a status line: "connecting" (the event socket not up yet), "connected",
        "reconnecting" (it was up and was lost: the client tries again with backoff), "closed"."""
        if self._closing:
            return "closed"
        if self._connected:
            return "connected"
        return "reconnecting" if self._ready.is_set() else "connecting"

    async def start(self) -> None:
        """Open the session and ask `/api/health`; raises `EngineError` titled "Cannot connect"
        when the server does not answer, wants a token, refuses it, or is not a stepflow server."""
        self._closing = False
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        try:
            async with asyncio.timeout(self._connect_timeout * 2):
                health = await self._call("GET", "/api/health")
            if not isinstance(health, dict) or "status" not in health:
                raise RemoteFailure("the answer to /api/health is not a StepFlow Monitor health report")
        except (EngineError, TimeoutError) as exc:
            await self.close()
            raise EngineError(self._connect_message(exc), title="Cannot connect") from None

    def _connect_message(self, exc: BaseException) -> str:
        url = self.base_url
        if isinstance(exc, TimeoutError):
            return f"{url} did not answer within {self._connect_timeout * 2:g} s"
        reason = getattr(exc, "message", None) or str(exc)
        if isinstance(exc, RemoteUnavailable):
            return reason
        if isinstance(exc, NotAuthorized):
            if self.token:
                return f"{url} refused the token: {reason}"
            return (f"{url} requires a token: {reason}. Pass one with --token "
                    f"(mint it on the server with `stepflow token create`)")
        return f"{url} is not a stepflow server: {reason}"

    async def close(self) -> None:
        self._closing = True
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
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RemoteEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- HTTP ------------------------------------------------------------------------------------------
    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            raise EngineError(f"not connected to {self.base_url}: call start() first", title="Not connected")
        return self._session

    async def _send(self, method: str, path: str, *, params: Any = None, body: Any = None,
                    raw: bool = False) -> tuple[int, Any]:
        session = self._require_session()
        try:
            async with session.request(method, self.base_url + path, params=params, json=body) as resp:
                content = await resp.read()
                status = resp.status
                reason = resp.reason or ""
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise RemoteUnavailable(f"Cannot reach {self.base_url}: {detail}") from None
        if raw and status < 400:
            return status, content
        try:
            payload = json.loads(content) if content else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            payload = None
        if status >= 400 or not isinstance(payload, dict) or payload.get("success") is not True:
            message = payload.get("error") if isinstance(payload, dict) else None
            if not message:
                message = f"{method} {path}: {reason or 'unexpected answer'}"
            if status < 400:
                raise RemoteFailure(f"{method} {path}: not a StepFlow Monitor answer")
            return status, str(message)
        return status, payload.get("data")

    async def _call(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        status, data = await self._send(method, path, params=params, body=body)
        if status >= 400:
            raise _error(status, data)
        return data

    async def _wait_ready(self) -> None:
        """Commands wait (briefly) for the event socket's first subscription, so that a subscriber
        that subscribed before submitting sees every event of what it submitted."""
        if self._pump is None or self._ready.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout):
                await self._ready.wait()

    async def _created(self, data: Any) -> Execution:
        execution_id = data["execution_id"]
        execution = await self.get_execution(execution_id)
        if execution is None:  # deleted at once by someone else: what the answer said
            return Execution(id=execution_id, name="", status=enum_or(ExecutionStatus, data.get("status"),
                                                                    ExecutionStatus.PENDING),  # type: ignore[arg-type]
                             created_at=parse_time(data.get("created_at")) or utcnow())
        return execution

    # -- commands --------------------------------------------------------------------------------------
    async def submit_command(
        self,
        command: str | Sequence[str],
        *,
        name: str | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        target: str = "local",
        tags: Sequence[str] = (),
        metadata: Mapping[str, object] | None = None,
        user: str | None = None,
        markers: str = "strict",
    ) -> Execution:
        """Run a shell command on the server (`cwd` is a folder there; None: the server's)."""
        text = command if isinstance(command, str) else shlex.join(command)
        body: dict[str, Any] = {"command": text, "target": target, "markers": markers,
                                "tags": list(tags), "environment": {str(k): str(v) for k, v in (env or {}).items()},
                                "metadata": dict(metadata or {})}
        if name is not None:
            body["name"] = name
        if cwd is not None:
            body["working_directory"] = str(cwd)
        if user is not None:
            body["user"] = user
        await self._wait_ready()
        return await self._created(await self._call("POST", "/api/executions", body=body))

    async def submit_workflow(
        self,
        path: str | Path | None = None,
        *,
        text: str | None = None,
        targets: Sequence[str] | None = None,
        name: str | None = None,
        user: str | None = None,
    ) -> Execution:
        """Run a workflow. A `path` names a file on the server (made absolute when it exists here
        too, for a server on this machine); when the server cannot read it but this machine can,
        its text is sent instead. Raises `WorkflowError` (with the server's `file:line:column`
        issues) when the workflow does not validate."""
        if text is None and path is None:
            raise InvalidRequest("a workflow needs a file path or its text")
        extra: dict[str, Any] = {}
        if targets:
            extra["targets"] = list(targets)
        if name is not None:
            extra["name"] = name
        if user is not None:
            extra["user"] = user
        label = str(path) if path is not None else None
        await self._wait_ready()
        if text is not None:
            return await self._post_workflow({"text": text, **extra}, text_file=label)
        local = await asyncio.to_thread(_local_file, path)  # type: ignore[arg-type]
        try:
            return await self._post_workflow({"path": str(local or path), **extra})
        except WorkflowError as exc:
            unreadable = all(i.message.startswith("cannot read the file") for i in exc.issues)
            if not (unreadable and local is not None):
                raise
        source = await asyncio.to_thread(local.read_text, encoding="utf-8-sig")
        return await self._post_workflow({"text": source, **extra}, text_file=label)

    async def _post_workflow(self, body: dict[str, Any], *, text_file: str | None = None) -> Execution:
        status, data = await self._send("POST", "/api/workflows", body=body)
        if status >= 400:
            if status in (400, 422):
                error = workflow_error(data, text_file=text_file)
                if error is not None:
                    raise error
            raise _error(status, data)
        return await self._created(data)

    async def cancel(self, execution_id: str, reason: AbortReason = AbortReason.USER) -> None:
        """Ask the server to stop it; the API records the reason as "user" whatever `reason` says."""
        await self._call("POST", f"/api/executions/{execution_id}/cancel")

    async def rerun(self, execution_id: str, *, from_failed: bool = False) -> Execution:
        await self._wait_ready()
        data = await self._call("POST", f"/api/executions/{execution_id}/rerun",
                                body={"from_failed": from_failed})
        return await self._created(data)

    async def delete(self, execution_id: str) -> None:
        await self._call("DELETE", f"/api/executions/{execution_id}")
        # at once, whether the socket's execution_deleted came first, comes later or not at all
        # (a server without that message, a socket down)
        self._on_deleted(execution_id)

    # -- reads ------------------------------------------------------------------------------------------
    async def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]:
        params: dict[str, Any] = {}
        if flt.status is not None:
            params["status"] = flt.status.value
        if flt.user is not None:
            params["user"] = flt.user
        if flt.text is not None:
            params["text"] = flt.text
        rows, total = await self._paged("/api/executions", "executions", params, flt.limit, flt.offset)
        return [execution_from_dict(d) for d in rows], total

    async def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]:
        params: dict[str, Any] = {}
        if flt.execution_id is not None:
            params["execution_id"] = flt.execution_id
        if flt.step_id is not None:
            params["step_id"] = flt.step_id
        if flt.artifact_type is not None:
            params["artifact_type"] = flt.artifact_type.value
        rows, total = await self._paged("/api/artifacts", "artifacts", params, flt.limit, flt.offset)
        return [artifact_from_dict(d) for d in rows], total

    async def _paged(self, path: str, key: str, params: dict[str, Any], limit: int,
                     offset: int) -> tuple[list[dict[str, Any]], int]:
        """`limit` rows from `offset`, in pages of the server's largest (a local store has no cap)."""
        rows: list[dict[str, Any]] = []
        total = 0
        want = max(limit, 0)
        while True:
            page = min(max(want - len(rows), 1), _LIST_PAGE)
            data = await self._call("GET", path, params={**params, "limit": page, "offset": offset + len(rows)})
            got = data[key]
            total = int(data["total_count"])
            if want == 0:
                return [], total
            rows.extend(got)
            if len(rows) >= want or len(got) < page or not data.get("has_more"):
                return rows[:want], total

    async def _detail(self, execution_id: str) -> tuple[Execution, list[Step]] | None:
        try:
            data = await self._call("GET", f"/api/executions/{execution_id}")
        except NotFound:
            return None
        execution = execution_from_dict(data["execution"])
        return execution, [step_from_dict(s, execution.id) for s in data.get("steps") or []]

    async def get_execution(self, execution_id: str) -> Execution | None:
        detail = await self._detail(execution_id)
        return None if detail is None else detail[0]

    async def get_steps(self, execution_id: str) -> list[Step]:
        detail = await self._detail(execution_id)
        return [] if detail is None else sorted(detail[1], key=lambda s: s.index)

    async def get_artifact(self, artifact_id: str) -> Artifact | None:
        try:
            data = await self._call("GET", f"/api/artifacts/{artifact_id}")
        except NotFound:
            return None
        return artifact_from_dict(data["artifact"])

    async def read_artifact(self, artifact_id: str) -> bytes:
        status, data = await self._send("GET", f"/api/artifacts/{artifact_id}/download", raw=True)
        if status >= 400:
            raise _error(status, data)
        return data  # type: ignore[no-any-return]

    async def get_log_lines(
        self,
        execution_id: str,
        *,
        step_ids: Sequence[str] | None = None,
        after_seq: int = -1,
        before_seq: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        offset: int = 0,
    ) -> list[LogLine]:
        """The lines, in pages of the server's largest (`limit` None: all of them). `offset` skips
        lines on the server (the first page only: the next ones go on from the last seq)."""
        if step_ids is not None and not step_ids:
            return []
        lines: list[LogLine] = []
        while True:
            page = _LOG_PAGE if limit is None else min(limit - len(lines), _LOG_PAGE)
            if page <= 0:
                return lines
            params: list[tuple[str, str]] = [("after_seq", str(after_seq)), ("limit", str(page)),
                                             ("newest_first", "true" if newest_first else "false")]
            if before_seq is not None:
                params.append(("before_seq", str(before_seq)))
            if offset > 0:
                params.append(("offset", str(offset)))
            params.extend(("step_id", s) for s in step_ids or ())
            try:
                data = await self._call("GET", f"/api/executions/{execution_id}/logs", params=params)
            except NotFound:
                return lines
            got = [line_from(d, execution_id) for d in data.get("lines") or []]
            lines.extend(got)
            offset = 0
            if len(got) < page:
                return lines
            if newest_first:
                before_seq = got[-1].seq
            else:
                after_seq = got[-1].seq

    async def count_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None) -> int:
        if step_ids is not None and not step_ids:
            return 0
        params = [("step_id", s) for s in step_ids or ()]
        try:
            data = await self._call("GET", f"/api/executions/{execution_id}/logs/count", params=params)
        except NotFound:
            return 0
        return int(data["count"])

    # -- events -----------------------------------------------------------------------------------------
    def subscribe(self, *, maxsize: int = 10_000) -> Subscription:
        """A new subscriber; the first one opens the shared WebSocket."""
        self._require_session()
        sub = self._fanout.subscribe(maxsize)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_socket(), name="remote-events")
        return sub

    async def _run_socket(self) -> None:
        delay = 0.1
        lost_at: datetime | None = None
        while not self._closing:
            session = self._require_session()
            try:
                async with session.ws_connect(self.ws_url, heartbeat=20.0, max_msg_size=16 * 1024 * 1024,
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
                    log.info("event socket to %s closed (%s)", self.ws_url, ws.close_code)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("event socket to %s: %s", self.ws_url, exc)
            except Exception:
                log.exception("event socket to %s failed", self.ws_url)
            if self._connected or (lost_at is None and self._ready.is_set()):
                lost_at = utcnow()
            self._connected = False
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_delay)

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
            detail = await self._detail(execution_id)
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
            execution = await self.get_execution(execution_id)
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
            artifact = await self.get_artifact(data["id"])
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
        if execution_id in self._refreshing or self._closing:
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
            execution = await self.get_execution(execution_id)
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
            recent, _total = await self.list_executions(ExecutionFilter(limit=100))
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
        detail = await self._detail(execution_id)
        if detail is None:
            self._on_deleted(execution_id)
            return
        execution, steps = detail
        for step in sorted(steps, key=lambda s: s.index):
            for event in self._step_events(tracked, step, changes_only=True):
                self._fanout.offer(event)
        if tracked.last_seq is not None:
            lines = await self.get_log_lines(execution_id, after_seq=tracked.last_seq, limit=_LOG_PAGE)
            for event in lines_events(lines):
                self._fanout.offer(event)
            if lines:
                tracked.last_seq = lines[-1].seq
            if len(lines) == _LOG_PAGE:
                total = await self.count_log_lines(execution_id)
                missing = total - (tracked.last_seq + 1)
                if missing > 0:
                    self._fanout.offer(LinesDropped(exec_id=execution_id, count=missing))
                    tracked.last_seq = total - 1
        if execution.status.is_terminal:
            self._tracked.pop(execution_id, None)
            self._fanout.offer(ExecutionFinished(execution))
        else:
            self._fanout.offer(ExecutionUpdated(execution))

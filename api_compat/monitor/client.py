"""`RemoteEngine`: the engine client over the StepFlow Monitor HTTP/WebSocket API, for
`stepflow tui --connect URL`.

Commands and reads are REST calls (the documented routes, plus ours: cancel, rerun, logs, workflows).
Events come from one WebSocket, turned back into `engine.events` by `RemoteEvents`
(`api_compat.monitor.client_events`), which this client owns and which reads over REST through it to
catch up after a reconnection."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack

import aiohttp

from api_compat.error_middleware import ENGINE_STATUS
from api_compat.monitor.client_events import LOG_PAGE as _LOG_PAGE
from api_compat.monitor.client_events import RemoteEvents
from api_compat.monitor.wire_decode import (
    artifact_from_dict,
    enum_or,
    execution_from_dict,
    parse_time,
    step_from_dict,
)
from api_compat.monitor.wire_decode import line_from_dict as line_from
from engine.client import Subscription
from engine.errors import Conflict, EngineError, InvalidRequest, NotFound
from engine.model import (
    AbortReason,
    Artifact,
    ArtifactFilter,
    Execution,
    ExecutionFilter,
    ExecutionKind,
    ExecutionStatus,
    LogLine,
    Step,
    utcnow,
)
from engine.store.logs import LogRange, LogSelection
from engine.submission import SubmitRequest, check_request
from engine.workflow.load import WorkflowError, WorkflowIssue

log = logging.getLogger(__name__)

#: the server's caps per request (ListExecutionsQuery, ListArtifactsQuery, LogLinesQuery)
_LIST_PAGE = 1000
#: `file:line:column: message`, as `WorkflowIssue.__str__` writes it
_ISSUE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<column>\d+): (?P<message>.*)$")
#: the file name the engine gives a workflow sent as text
_TEXT_WORKFLOW = "<workflow>"


class RemoteUnavailable(EngineError):
    """The server did not answer (refused, reset, timed out)."""

    title = "Cannot reach server"


class NotAuthorized(EngineError):
    """The server wants a (valid) bearer token."""

    title = "Not authorized"


class RemoteFailure(EngineError):
    """The server answered with an error that is none of the engine's (a 500...)."""

    title = "Server error"


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


#: the engine error each status stands for: the server's table read backwards, and the statuses
#: the server answers besides (a body too large, a token refused)
_STATUS_ERROR: dict[int, type[EngineError]] = {
    **{status: cls for cls, status in ENGINE_STATUS}, 413: InvalidRequest, 422: InvalidRequest,
    401: NotAuthorized, 403: NotAuthorized,
}


def _error(status: int, message: str) -> EngineError:
    cls = _STATUS_ERROR.get(status)
    return cls(message) if cls is not None else RemoteFailure(f"HTTP {status}: {message}")


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
        self._closing = False
        #: the event socket and what it turns into events
        self.events = RemoteEvents(self)

    # -- life cycle ----------------------------------------------------------------------------------
    @property
    def description(self) -> str:
        return self.base_url

    @property
    def ws_url(self) -> str:
        scheme, rest = self.base_url.split("://", 1)
        # with the branch steps' updates (the tree's per-target parents), as the detail is read
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/ws?branches=true"

    @property
    def connected(self) -> bool:
        """Whether the event socket is up (False before the first `subscribe()`)."""
        return self.events.connected

    @property
    def connection_state(self) -> str:
        """For a status line: "connecting" (the event socket not up yet), "connected",
        "reconnecting" (it was up and was lost: the client tries again with backoff), "closed"."""
        if self._closing:
            return "closed"
        if self.events.connected:
            return "connected"
        return "reconnecting" if self.events.was_ready else "connecting"

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
        await self.events.close()
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
        await self.events.wait_ready(self._connect_timeout)

    async def _created(self, data: Any) -> Execution:
        execution_id = data["execution_id"]
        execution = await self.get_execution(execution_id)
        if execution is None:  # deleted at once by someone else: what the answer said
            return Execution(id=execution_id, name="", status=enum_or(ExecutionStatus, data.get("status"),
                                                                    ExecutionStatus.PENDING),  # type: ignore[arg-type]
                             created_at=parse_time(data.get("created_at")) or utcnow())
        return execution

    # -- commands --------------------------------------------------------------------------------------
    async def submit(self, request: SubmitRequest) -> Execution:
        """Submit through the Monitor API (`POST /api/executions` or `/api/workflows`). What that
        API has no field for (secrets, priority, labels, a rerun's origin) is refused rather than
        dropped: the server would run something other than what was asked."""
        check_request(request)
        unsent = [what for what, given in (
            ("secrets", request.secrets), ("priority", request.priority), ("labels", request.labels),
            ("rerun_of", request.rerun_of), ("done_steps", request.done_steps),
        ) if given]
        if unsent:
            raise InvalidRequest(f"the StepFlow Monitor API cannot take {', '.join(unsent)} with a submission")
        if request.kind is ExecutionKind.WORKFLOW:
            return await self._submit_workflow(request)
        return await self._submit_command(request)

    async def _submit_command(self, request: SubmitRequest) -> Execution:
        """Run a shell command on the server (`cwd` is a folder there; None: the server's)."""
        command = request.command or ""
        text = command if isinstance(command, str) else shlex.join(command)
        body: dict[str, Any] = {"command": text, "target": request.target, "markers": request.markers,
                                "tags": list(request.tags),
                                "environment": {str(k): str(v) for k, v in request.env.items()},
                                "metadata": dict(request.metadata)}
        if request.name is not None:
            body["name"] = request.name
        if request.cwd is not None:
            body["working_directory"] = str(request.cwd)
        if request.user is not None:
            body["user"] = request.user
        if request.timeout is not None:
            body["timeout"] = request.timeout
        await self._wait_ready()
        return await self._created(await self._call("POST", "/api/executions", body=body))

    async def _submit_workflow(self, request: SubmitRequest) -> Execution:
        """Run a workflow. A path names a file on the server (made absolute when it exists here
        too, for a server on this machine); when the server cannot read it but this machine can,
        its text is sent instead. Raises `WorkflowError` (with the server's `file:line:column`
        issues) when the workflow does not validate."""
        path, text = request.workflow_path, request.workflow_text
        extra: dict[str, Any] = {}
        if request.targets:
            extra["targets"] = list(request.targets)
        if request.name is not None:
            extra["name"] = request.name
        if request.user is not None:
            extra["user"] = request.user
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
        except (InvalidRequest, NotAuthorized):
            # a server that runs no files by path (400), or not this one: outside its workflow folders (403)
            if local is None:
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
        # as the local engine: a running one is refused (the API's DELETE would cancel it first)
        execution = await self.get_execution(execution_id)
        if execution is None:
            raise NotFound(f"no execution {execution_id}")
        if not execution.status.is_terminal:
            raise Conflict(f"the execution is {execution.status.value}: cancel it first")
        await self._call("DELETE", f"/api/executions/{execution_id}")
        # at once, whether the socket's execution_deleted came first, comes later or not at all
        # (a server without that message, a socket down)
        self.events.deleted(execution_id)

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
            # with the branch steps: they are the tree's per-target parents
            data = await self._call("GET", f"/api/executions/{execution_id}", params={"branches": "true"})
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
        **selection: Unpack[LogSelection],
    ) -> list[LogLine]:
        """The lines, in pages of the server's largest (`limit` None: all of them). `offset` skips
        lines on the server (the first page only: the next ones go on from the last seq)."""
        r = LogRange.of(selection)
        step_ids, after_seq, before_seq, limit = r.step_ids, r.after_seq, r.before_seq, r.limit
        newest_first, offset = r.newest_first, r.offset
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

    # -- events: the socket's side, in api_compat.monitor.client_events ---------------------------
    def subscribe(self, *, maxsize: int = 10_000) -> Subscription:
        """A new subscriber; the first one opens the shared WebSocket."""
        self._require_session()
        return self.events.subscribe(maxsize)


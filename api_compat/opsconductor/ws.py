"""The `/ws/executions` WebSocket: what happens to the executions of jobs, as the engine's events
say it. Every client gets every message (`{"type", "data"}`, JSON text):

- `execution_started`: `{execution_serial, job_serial, status, started_at}` (the document's);
- `branch_completed`: `{branch_serial, execution_serial, target_serial_ref, status, exit_code,
  completed_at}` (the document's), when a target's branch ends, whatever its status;
- `execution_completed` (ours): `{execution_serial, job_serial, status, started_at, completed_at,
  duration, exit_code, error_message, branches_total, branches_completed, branches_failed}`.

The serials come from the execution's labels (api_compat.opsconductor.launch), which its events
carry: nothing is read from the store on the way. A client's `{"type": "ping"}` is answered
`{"type": "pong"}`; anything else it sends is ignored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from api_compat.opsconductor.keys import WS_HUB
from api_compat.opsconductor.launch import BRANCH_LABEL, EXECUTION_LABEL, JOB_LABEL
from api_compat.opsconductor.wire import rfc3339
from api_compat.ws_fanout import FanoutHub, WsClient
from engine.client import EngineClient, Subscription
from engine.events import (
    Event,
    ExecutionCreated,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
    StepFinished,
)
from engine.model import Execution, StepKind

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Tracked:
    execution_serial: str
    job_serial: str
    #: target name -> (branch serial, target serial)
    branches: dict[str, tuple[str, str]]
    ended: dict[str, str] = field(default_factory=dict)


def _tracked(execution: Execution) -> _Tracked | None:
    labels = execution.labels
    serial = labels.get(EXECUTION_LABEL)
    if serial is None:
        return None
    branches = {}
    for key, value in labels.items():
        if key.startswith(BRANCH_LABEL):
            branch, _, target = value.partition(" ")
            branches[key[len(BRANCH_LABEL):]] = (branch, target)
    return _Tracked(serial, labels.get(JOB_LABEL, serial.split(".", 1)[0]), branches)


def message(kind: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data})


class OpsWsHub(FanoutHub):
    def __init__(self, engine: EngineClient, *, client_queue: int = 2_000) -> None:
        super().__init__(client_queue=client_queue, log_budget=0)
        self.engine = engine
        self._subscription: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        #: the jobs' executions still running, by execution id
        self._executions: dict[str, _Tracked] = {}

    async def start(self) -> None:
        if self._pump is None:
            self._subscription = self.engine.subscribe(maxsize=20_000)
            self._pump = asyncio.create_task(self._run(), name="opsconductor-ws")
        await super().start()

    async def drain(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self._pump is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._pump), 2.0)
            except (TimeoutError, asyncio.CancelledError):
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pump
            self._pump = None

    async def on_text(self, client: WsClient, text: str) -> None:
        with contextlib.suppress(ValueError):
            if json.loads(text).get("type") == "ping":
                client.send(message("pong", {}))

    async def _run(self) -> None:
        assert self._subscription is not None
        async for event in self._subscription:
            try:
                self.dispatch(event)
            except Exception:
                log.exception("turning %s into an OpsConductor message failed", type(event).__name__)

    def dispatch(self, event: Event) -> None:
        if isinstance(event, (ExecutionCreated, ExecutionUpdated, ExecutionStarted)):
            tracked = self._executions.get(event.execution.id)
            if tracked is None:
                tracked = _tracked(event.execution)
                if tracked is None:
                    return
                self._executions[event.execution.id] = tracked
            if isinstance(event, ExecutionStarted):
                ex = event.execution
                self.broadcast(message("execution_started", {
                    "execution_serial": tracked.execution_serial, "job_serial": tracked.job_serial,
                    "status": ex.status.value, "started_at": rfc3339(ex.started_at)}))
        elif isinstance(event, StepFinished) and event.step.kind is StepKind.BRANCH:
            tracked = self._executions.get(event.step.execution_id)
            if tracked is None or event.step.target not in tracked.branches:
                return
            step = event.step
            branch_serial, target_serial = tracked.branches[step.target]
            tracked.ended[step.target] = step.status.value
            self.broadcast(message("branch_completed", {
                "branch_serial": branch_serial, "execution_serial": tracked.execution_serial,
                "target_serial_ref": target_serial, "status": step.status.value, "exit_code": step.exit_code,
                "completed_at": rfc3339(step.completed_at)}))
        elif isinstance(event, ExecutionFinished):
            ex = event.execution
            tracked = self._executions.pop(ex.id, None) or _tracked(ex)
            if tracked is None:
                return
            ended = list(tracked.ended.values())
            self.broadcast(message("execution_completed", {
                "execution_serial": tracked.execution_serial, "job_serial": tracked.job_serial,
                "status": ex.status.value, "started_at": rfc3339(ex.started_at),
                "completed_at": rfc3339(ex.completed_at),
                "duration": None if ex.duration_seconds is None else round(ex.duration_seconds, 3),
                "exit_code": ex.exit_code, "error_message": ex.error_message,
                "branches_total": len(tracked.branches), "branches_completed": ended.count("completed"),
                "branches_failed": ended.count("failed")}))
        elif isinstance(event, ExecutionDeleted):
            self._executions.pop(event.id, None)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[WS_HUB].serve(request)

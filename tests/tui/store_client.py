"""A read-only `EngineClient` over a real store (the scripted, deterministic engine of the TUI's
snapshot tests): commands are recorded, and the test publishes events itself through `publish()`
(applied to the store, then fanned out). The TUI's tests run it over a SqliteStore on a file in
their temporary directory."""

from __future__ import annotations

import asyncio
import dataclasses

from engine.errors import Conflict, NotFound
from engine.events import Event, ExecutionCreated, ExecutionDeleted
from engine.hub import Hub
from engine.model import (
    AbortReason,
    ArtifactFilter,
    Execution,
    ExecutionFilter,
    ExecutionKind,
    ExecutionStatus,
    new_id,
)
from engine.store import Store
from engine.submission import SubmitRequest


class StoreClient:
    """An `EngineClient` that reads a store and runs nothing."""

    def __init__(self, store: Store, *, description: str = "/data/stepflow", artifact_bytes: dict[str, bytes] | None = None) -> None:
        self.store = store
        self.hub = Hub()
        self.calls: list[tuple[str, tuple, dict]] = []
        self.artifact_bytes = artifact_bytes or {}
        self.submit_error: Exception | None = None
        self._opened = False
        self._lock: asyncio.Lock | None = None
        self._description = description
        #: reads of executions and log lines asked of the store
        self.queries = 0

    async def _ready(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._opened:
                await self.store.open()
                self._opened = True

    async def publish(self, *events: Event) -> None:
        await self._ready()
        await self.store.apply(events)
        for ev in events:
            for sub in tuple(self.hub._subscribers):
                sub.offer(ev)

    @property
    def description(self) -> str:
        return self._description

    async def submit(self, request: SubmitRequest) -> Execution:
        self.calls.append(("submit", (request,), {}))
        if self.submit_error:
            raise self.submit_error
        if request.kind is ExecutionKind.WORKFLOW:
            path = str(request.workflow_path)
            ex = Execution(id=new_id(), name=path, kind=ExecutionKind.WORKFLOW, command=path)
        else:
            command = str(request.command)
            ex = Execution(id=new_id(), name=request.name or command, command=command)
        await self.publish(ExecutionCreated(ex))
        return ex

    async def cancel(self, execution_id: str, reason: AbortReason = AbortReason.USER) -> None:
        self.calls.append(("cancel", (execution_id,), {"reason": reason}))

    async def rerun(self, execution_id: str, *, from_failed: bool = False) -> Execution:
        self.calls.append(("rerun", (execution_id,), {"from_failed": from_failed}))
        original = await self.get_execution(execution_id)
        if original is None:
            raise NotFound(f"no execution {execution_id}")
        ex = dataclasses.replace(original.snapshot(), id=new_id(), status=ExecutionStatus.PENDING,
                                 rerun_of=execution_id)
        await self.publish(ExecutionCreated(ex))
        return ex

    async def delete(self, execution_id: str) -> None:
        self.calls.append(("delete", (execution_id,), {}))
        ex = await self.get_execution(execution_id)
        if ex is None:
            raise NotFound(f"no execution {execution_id}")
        if not ex.status.is_terminal:
            raise Conflict("the execution is still running: cancel it first")
        await self.publish(ExecutionDeleted(execution_id))

    async def list_executions(self, flt: ExecutionFilter):
        await self._ready()
        self.queries += 1
        return await self.store.list_executions(flt)

    async def get_execution(self, execution_id: str):
        await self._ready()
        return await self.store.get_execution(execution_id)

    async def get_steps(self, execution_id: str):
        await self._ready()
        return await self.store.get_steps(execution_id)

    async def list_artifacts(self, flt: ArtifactFilter):
        await self._ready()
        return await self.store.list_artifacts(flt)

    async def read_artifact(self, artifact_id: str) -> bytes:
        await self._ready()
        if artifact_id in self.artifact_bytes:
            return self.artifact_bytes[artifact_id]
        raise NotFound(f"no artifact {artifact_id}")

    async def get_log_lines(self, execution_id: str, **kw):
        await self._ready()
        self.queries += 1
        return await self.store.get_log_lines(execution_id, **kw)

    async def count_log_lines(self, execution_id: str, *, step_ids=None) -> int:
        await self._ready()
        return await self.store.count_log_lines(execution_id, step_ids=step_ids)

    def subscribe(self, *, maxsize: int = 10_000):
        return self.hub.subscribe(maxsize)

    async def aclose(self) -> None:
        self.hub.close()
        if self._opened:
            await self.store.close()

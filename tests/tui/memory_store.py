"""An in-memory `engine.store.Store` for TUI tests that need no disk, and a read-only
`EngineClient` over any store (the scripted, deterministic engine of the snapshot tests)."""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
from collections.abc import Sequence

from engine.errors import Conflict, NotFound
from engine.events import (
    ArtifactAdded,
    ArtifactDeleted,
    Event,
    ExecutionCreated,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
    LinesLogged,
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
)
from engine.store import Store, StoreStats
from engine.submission import SubmitRequest


class MemoryStore:
    def __init__(self) -> None:
        self.executions: dict[str, Execution] = {}
        self.steps: dict[str, dict[str, Step]] = {}
        self.lines: dict[str, list[LogLine]] = {}
        self.artifacts: dict[str, Artifact] = {}
        self.queries = 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def apply(self, events: Sequence[Event]) -> None:
        for ev in events:
            if isinstance(ev, ExecutionCreated):
                self.executions[ev.execution.id] = ev.execution.snapshot()
                self.steps[ev.execution.id] = {s.id: s.snapshot() for s in ev.steps}
                self.lines.setdefault(ev.execution.id, [])
            elif isinstance(ev, ExecutionStarted | ExecutionUpdated | ExecutionFinished):
                self.executions[ev.execution.id] = ev.execution.snapshot()
            elif isinstance(ev, StepAdded | StepStarted | StepUpdated | StepFinished):
                self.steps.setdefault(ev.step.execution_id, {})[ev.step.id] = ev.step.snapshot()
            elif isinstance(ev, LinesLogged):
                self.lines.setdefault(ev.exec_id, []).extend(ev.log_lines())
            elif isinstance(ev, ExecutionDeleted):
                await self.delete_execution(ev.id)
            elif isinstance(ev, ArtifactAdded):
                self.artifacts[ev.artifact.id] = ev.artifact
            elif isinstance(ev, ArtifactDeleted):
                self.artifacts.pop(ev.artifact_id, None)

    async def mark_lost(self) -> list[str]:
        return []

    async def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]:
        self.queries += 1
        rows = sorted(self.executions.values(), key=lambda e: (e.created_at, e.id), reverse=True)
        if flt.status is not None:
            rows = [e for e in rows if e.status is flt.status]
        if flt.text:
            t = flt.text.lower()
            rows = [e for e in rows if t in e.name.lower() or t in e.command.lower()]
        return [e.snapshot() for e in rows[flt.offset : flt.offset + flt.limit]], len(rows)

    async def get_execution(self, execution_id: str) -> Execution | None:
        ex = self.executions.get(execution_id)
        return ex.snapshot() if ex else None

    async def resolve_execution_id(self, prefix: str) -> list[str]:
        return [i for i in self.executions if i.startswith(prefix)][:5]

    async def get_steps(self, execution_id: str) -> list[Step]:
        return sorted((s.snapshot() for s in self.steps.get(execution_id, {}).values()), key=lambda s: s.index)

    async def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]:
        rows = [a for a in self.artifacts.values()
                if (flt.execution_id is None or a.execution_id == flt.execution_id)
                and (flt.step_id is None or a.step_id == flt.step_id)]
        rows.sort(key=lambda a: (a.created_at, a.id))
        return rows[flt.offset : flt.offset + flt.limit], len(rows)

    async def get_artifact(self, artifact_id: str) -> Artifact | None:
        return self.artifacts.get(artifact_id)

    async def get_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None,
                            after_seq: int = -1, before_seq: int | None = None, limit: int | None = None,
                            newest_first: bool = False, offset: int = 0) -> list[LogLine]:
        self.queries += 1
        lines = self.lines.get(execution_id, [])
        seqs = [ln.seq for ln in lines] if step_ids is None else None
        if seqs is not None:
            lo = bisect.bisect_right(seqs, after_seq)
            hi = len(lines) if before_seq is None else bisect.bisect_left(seqs, before_seq)
            window = lines[lo:hi]
        else:
            ids = set(step_ids)
            window = [ln for ln in lines if ln.step_id in ids and ln.seq > after_seq
                      and (before_seq is None or ln.seq < before_seq)]
        if newest_first:
            window = window[::-1]
        window = window[offset:]
        return list(window[:limit] if limit is not None else window)

    async def count_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None) -> int:
        lines = self.lines.get(execution_id, [])
        if step_ids is None:
            return len(lines)
        ids = set(step_ids)
        return sum(1 for ln in lines if ln.step_id in ids)

    async def fail_execution(self, execution_id: str, error: str) -> bool:
        execution = self.executions.get(execution_id)
        if execution is None or execution.status.is_terminal:
            return False
        execution.status, execution.error_message = ExecutionStatus.FAILED, error
        return True

    async def delete_execution(self, execution_id: str) -> bool:
        found = self.executions.pop(execution_id, None) is not None
        self.steps.pop(execution_id, None)
        self.lines.pop(execution_id, None)
        for aid in [a.id for a in self.artifacts.values() if a.execution_id == execution_id]:
            del self.artifacts[aid]
        return found

    async def stats(self) -> StoreStats:
        return StoreStats(total_executions=len(self.executions))

    async def optimize(self) -> list[str]:
        return []


class StoreClient:
    """An `EngineClient` that reads a store and runs nothing: commands are recorded, and the test
    publishes events itself through `publish()` (applied to the store, then fanned out)."""

    def __init__(self, store: Store, *, description: str = "/data/stepflow", artifact_bytes: dict[str, bytes] | None = None) -> None:
        self.store = store
        self.hub = Hub()
        self.calls: list[tuple[str, tuple, dict]] = []
        self.artifact_bytes = artifact_bytes or {}
        self.submit_error: Exception | None = None
        self._opened = False
        self._lock: asyncio.Lock | None = None
        self._description = description

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
        from engine.events import ExecutionCreated
        from engine.model import ExecutionKind, new_id

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
        from engine.model import new_id

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

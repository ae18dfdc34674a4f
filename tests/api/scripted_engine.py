"""A scripted, in-memory engine for the API tests that need to control events exactly (a slow
WebSocket client, the drop notice). It keeps the state the real engine would keep and publishes
through the engine's own `Hub`, so the listener sees the same subscription semantics."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from engine.artifacts import classify, guess_mime
from engine.errors import Conflict, InvalidRequest, NotFound
from engine.events import (
    ArtifactAdded,
    Event,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionStarted,
    LinesLogged,
    StepFinished,
    StepStarted,
)
from engine.hub import Hub, Subscriber
from engine.model import (
    AbortReason,
    Artifact,
    ArtifactFilter,
    ArtifactType,
    Execution,
    ExecutionFilter,
    ExecutionKind,
    ExecutionStatus,
    LogLine,
    Step,
    StepKind,
    StepStatus,
    Stream,
    new_id,
    utcnow,
)
from engine.store import StoreStats
from engine.submission import SubmitRequest


class ScriptedEngine:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.hub = Hub(sink_size=1_000_000)
        self.executions: dict[str, Execution] = {}
        self.steps: dict[str, list[Step]] = {}
        self.lines: dict[str, list[LogLine]] = {}
        self.artifacts: dict[str, Artifact] = {}
        self.optimized = 0

    @property
    def description(self) -> str:
        return str(self.data_dir)

    async def publish(self, event: Event) -> None:
        await self.hub.publish(event)
        self.hub.sink.get_nowait()

    # -- commands ---------------------------------------------------------------------------------
    async def submit(self, request: SubmitRequest) -> Execution:
        if request.kind is ExecutionKind.WORKFLOW:
            return await self.add_command(f"workflow {request.workflow_path or '<text>'}", name=request.name,
                                             user=request.user)
        return await self.add_command(str(request.command), name=request.name, cwd=request.cwd,
                                         env=request.env, target=request.target, tags=request.tags,
                                         metadata=request.metadata, user=request.user)

    async def add_command(self, command: str, *, name: str | None = None, cwd: str | None = None,
                             env: Mapping[str, str] | None = None, target: str = "local",
                             tags: Sequence[str] = (), metadata: Mapping[str, object] | None = None,
                             user: str | None = None) -> Execution:
        """What the tests script: a command execution created, never run."""
        if target != "local":
            raise InvalidRequest(f"unknown target {target!r} (known: local)")
        ex = Execution(id=new_id(), name=name or command, command=command, working_directory=cwd or "/",
                       environment=dict(env or {}), user=user or "tester", tags=list(tags),
                       metadata=dict(metadata or {}), targets=[target])
        branch = Step(id=new_id(), execution_id=ex.id, name=target, kind=StepKind.BRANCH, target=target)
        self.executions[ex.id] = ex
        self.steps[ex.id] = [branch]
        self.lines[ex.id] = []
        await self.publish(ExecutionCreated(ex.snapshot(), (branch.snapshot(),)))
        return ex.snapshot()

    async def start(self, execution_id: str) -> None:
        ex = self.executions[execution_id]
        ex.status = ExecutionStatus.RUNNING
        ex.started_at = utcnow()
        await self.publish(ExecutionStarted(ex.snapshot()))

    async def start_step(self, execution_id: str, name: str) -> Step:
        steps = self.steps[execution_id]
        step = Step(id=new_id(), execution_id=execution_id, name=name, kind=StepKind.MARKER,
                    parent_id=steps[0].id, index=len(steps), status=StepStatus.RUNNING, started_at=utcnow())
        steps.append(step)
        self.executions[execution_id].total_steps += 1
        await self.publish(StepStarted(step.snapshot()))
        return step

    async def finish_step(self, step: Step, status: StepStatus = StepStatus.COMPLETED) -> None:
        step.status = status
        step.completed_at = utcnow()
        await self.publish(StepFinished(step.snapshot()))

    async def log(self, execution_id: str, step_id: str | None, texts: Sequence[str],
                  stream: Stream = Stream.STDOUT) -> None:
        lines = self.lines[execution_id]
        start = len(lines)
        now = utcnow()
        lines.extend(LogLine(execution_id, step_id, start + i, stream, now, t) for i, t in enumerate(texts))
        await self.publish(LinesLogged(execution_id, step_id, stream, start, now, tuple(texts)))

    async def finish(self, execution_id: str, status: ExecutionStatus = ExecutionStatus.COMPLETED,
                     exit_code: int = 0) -> None:
        ex = self.executions[execution_id]
        ex.status = status
        ex.exit_code = exit_code
        ex.completed_at = utcnow()
        await self.publish(ExecutionFinished(ex.snapshot()))

    async def cancel(self, execution_id: str, reason: AbortReason = AbortReason.USER) -> None:
        ex = self._get(execution_id)
        if ex.status.is_terminal:
            raise Conflict(f"execution {execution_id} is {ex.status.value}, not running")
        ex.abort_reason = reason
        await self.finish(execution_id, ExecutionStatus.CANCELLED, -15)

    async def rerun(self, execution_id: str, *, from_failed: bool = False) -> Execution:
        ex = self._get(execution_id)
        return await self.add_command(ex.command, name=ex.name)

    async def delete(self, execution_id: str) -> None:
        ex = self._get(execution_id)
        if not ex.status.is_terminal:
            raise Conflict("the execution is still running: cancel it first")
        del self.executions[execution_id]

    async def cancel_and_delete(self, execution_id: str) -> bool:
        cancelled = not self._get(execution_id).status.is_terminal
        if cancelled:
            await self.cancel(execution_id)
        await self.delete(execution_id)
        return cancelled

    def _get(self, execution_id: str) -> Execution:
        ex = self.executions.get(execution_id)
        if ex is None:
            raise NotFound(f"no execution {execution_id}")
        return ex

    # -- reads ------------------------------------------------------------------------------------
    async def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]:
        items = [e for e in reversed(self.executions.values())
                 if (flt.status is None or e.status is flt.status) and (flt.user is None or e.user == flt.user)]
        return [e.snapshot() for e in items[flt.offset:flt.offset + flt.limit]], len(items)

    async def get_execution(self, execution_id: str) -> Execution | None:
        ex = self.executions.get(execution_id)
        return ex.snapshot() if ex else None

    async def get_steps(self, execution_id: str) -> list[Step]:
        return [s.snapshot() for s in self.steps.get(execution_id, [])]

    async def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]:
        items = [a for a in self.artifacts.values()
                 if (flt.execution_id is None or a.execution_id == flt.execution_id)
                 and (flt.step_id is None or a.step_id == flt.step_id)
                 and (flt.artifact_type is None or a.artifact_type is flt.artifact_type)]
        return items[flt.offset:flt.offset + flt.limit], len(items)

    async def read_artifact(self, artifact_id: str) -> bytes:
        return await asyncio.to_thread(Path(self.artifacts[artifact_id].file_path).read_bytes)

    async def get_log_lines(self, execution_id: str, *, step_ids=None, after_seq: int = -1, before_seq=None,
                            limit=None, newest_first: bool = False) -> list[LogLine]:
        lines = [ln for ln in self.lines.get(execution_id, [])
                 if ln.seq > after_seq and (before_seq is None or ln.seq < before_seq)
                 and (step_ids is None or ln.step_id in step_ids)]
        if newest_first:
            lines.reverse()
        return lines[:limit] if limit else lines

    async def count_log_lines(self, execution_id: str, *, step_ids=None) -> int:
        return len(await self.get_log_lines(execution_id, step_ids=step_ids))

    def subscribe(self, *, maxsize: int = 10_000) -> Subscriber:
        return self.hub.subscribe(maxsize)

    # -- what the listener uses beyond the client interface ----------------------------------------
    async def stats(self) -> StoreStats:
        by: dict[str, int] = {}
        for e in self.executions.values():
            by[e.status.value] = by.get(e.status.value, 0) + 1
        return StoreStats(total_executions=len(self.executions), by_status=by,
                          total_steps=sum(len(s) for s in self.steps.values()),
                          total_artifacts=len(self.artifacts), wal_mode="wal", storage_path=str(self.data_dir))

    async def optimize(self) -> list[str]:
        self.optimized += 1
        return ["ANALYZE", "WAL checkpoint (TRUNCATE)", "PRAGMA optimize"]

    async def add_artifact(self, execution_id: str, *, name: str, file_name: str, data: bytes,
                           step_id: str | None = None, description: str = "",
                           artifact_type: ArtifactType | None = None, tags: Sequence[str] = ()) -> Artifact:
        self._get(execution_id)
        artifact_id = new_id()
        folder = self.data_dir / "artifacts" / execution_id / artifact_id
        folder.mkdir(parents=True)
        path = folder / file_name
        path.write_bytes(data)
        mime = guess_mime(file_name)
        art = Artifact(id=artifact_id, execution_id=execution_id, step_id=step_id, name=name,
                       file_name=file_name, file_path=str(path), file_size=len(data), mime_type=mime,
                       artifact_type=artifact_type or classify(file_name, mime),
                       sha256=hashlib.sha256(data).hexdigest(), description=description, tags=list(tags))
        self.artifacts[artifact_id] = art
        await self.publish(ArtifactAdded(art))
        return art

    async def get_artifact(self, artifact_id: str) -> Artifact | None:
        return self.artifacts.get(artifact_id)

    async def delete_artifact(self, artifact_id: str) -> None:
        if self.artifacts.pop(artifact_id, None) is None:
            raise NotFound(f"no artifact {artifact_id}")

    def artifact_path(self, artifact: Artifact) -> Path:
        return Path(artifact.file_path)

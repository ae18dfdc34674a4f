"""The engine's reads, as a part of `engine.engine.Engine`: the live runs first (what they hold
may not be stored yet), then the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Unpack

from engine.errors import InvalidRequest, NotFound
from engine.model import Artifact, ArtifactFilter, Execution, ExecutionFilter, LogLine, Step
from engine.store.logs import LogSelection

if TYPE_CHECKING:
    import asyncio

    from engine.execution.state import ExecutionState
    from engine.hub import Hub, Subscriber
    from engine.jobs import Jobs
    from engine.store import Store, StoreStats
    from engine.store_writer import StoreWriter


class LiveReads:
    """Mixed into `Engine`, whose store, hub, writer, live runs and executr jobs it reads."""

    store: Store
    hub: Hub
    writer: StoreWriter
    _runs: dict[str, tuple[ExecutionState, asyncio.Task[None]]]
    _jobs: Jobs | None

    def is_live(self, execution_id: str) -> bool:
        return execution_id in self._runs

    @property
    def running_count(self) -> int:
        return len(self._runs)

    async def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]:
        return await self.store.list_executions(flt)

    async def get_execution(self, execution_id: str) -> Execution | None:
        entry = self._runs.get(execution_id)
        if entry is not None:
            return entry[0].execution.snapshot()
        stored = await self.store.get_execution(execution_id)
        # a job just claimed is running although the store may not say so yet (only this engine's
        # Jobs can have claimed it: none made, none claimed)
        return stored if stored is None or self._jobs is None else self._jobs.as_claimed(stored)

    async def resolve_execution_id(self, prefix: str) -> str:
        if prefix in self._runs:
            return prefix
        matches = await self.store.resolve_execution_id(prefix)
        if not matches:
            raise NotFound(f"no execution with id {prefix!r}")
        if len(matches) > 1 and prefix not in matches:
            raise InvalidRequest(f"{prefix!r} is ambiguous: {', '.join(m[:12] for m in matches[:5])}")
        return prefix if prefix in matches else matches[0]

    async def get_steps(self, execution_id: str) -> list[Step]:
        entry = self._runs.get(execution_id)
        if entry is None:
            return await self.store.get_steps(execution_id)
        # the live state holds the open steps and the finished ones the store may not hold yet; a
        # finished marker step leaves it only once stored. Copied before the store is read, so a
        # step that leaves meanwhile is in what the read sees.
        live = {s.id: s.snapshot() for s in entry[0].steps.values()}
        stored = await self.store.get_steps(execution_id)
        merged = [live.pop(s.id, s) for s in stored]
        merged += live.values()
        merged.sort(key=lambda s: s.index)
        return merged

    async def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]:
        return await self.store.list_artifacts(flt)

    async def get_log_lines(
        self,
        execution_id: str,
        **selection: Unpack[LogSelection],
    ) -> list[LogLine]:
        return await self.store.get_log_lines(execution_id, **selection)

    async def count_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None) -> int:
        return await self.store.count_log_lines(execution_id, step_ids=step_ids)

    async def stats(self) -> StoreStats:
        return await self.store.stats()

    async def optimize(self) -> list[str]:
        await self.writer.barrier()
        return await self.store.optimize()

    def subscribe(self, *, maxsize: int = 10_000) -> Subscriber:
        return self.hub.subscribe(maxsize)

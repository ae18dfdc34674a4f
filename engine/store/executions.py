"""The store's protocols for executions: the events that write them, the reads of them and of the
database itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.events import Event
from engine.model import Execution, ExecutionFilter, Step


@dataclass(slots=True)
class StoreStats:
    total_executions: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    total_steps: int = 0
    total_artifacts: int = 0
    total_log_lines: int = 0
    database_size_bytes: int = 0
    wal_mode: str = ""
    cache_size: int = 0
    storage_path: str = ""
    oldest_execution: str | None = None
    newest_execution: str | None = None
    #: mean of completed_at - started_at over finished executions that started (None: there are none)
    avg_duration_seconds: float | None = None


class ExecutionEvents(Protocol):
    """Writes of executions, their steps, lines and artifacts: only through events (the engine's
    store writer), and the few repairs around them."""

    async def apply(self, events: Sequence[Event]) -> Mapping[str, str] | None:
        """Persist a batch of events in one transaction (upserts of snapshots, inserts of lines).
        Returns the executions some of whose rows the store refused and skipped (id -> why), the
        rest being written. Raises engine.errors.StoreFull when the disk is full; any other
        exception for a batch that could not be written (nothing of it is)."""

    async def fail_execution(self, execution_id: str, error: str) -> bool:
        """Mark a pending or running execution failed with `error`, touching nothing else (its
        other writes failed: see engine.store_writer). False if there was no such row to change."""

    async def take_queued(self, execution_id: str, owner: str, was: str | None) -> bool:
        """Make `owner` the owner of a queued execution (pending, never admitted) whose owner is
        still `was`, in one guarded statement: of two engines adopting it at once, one gets it."""

    async def mark_lost(self, owner_alive: Callable[[str | None], bool] | None = None) -> list[str]:
        """Executions left running by a dead engine become failed with reason 'engine lost' (their
        open steps too). `owner_alive(execution.owner)` returning True spares an execution whose
        engine still runs; without it every running execution is lost. Pending ones never admitted (no
        `admitted_at`) are not lost: they wait for an engine to admit them. Returns ids."""

    async def delete_execution(self, execution_id: str) -> bool:
        """Delete the rows (steps, lines, artifacts rows); artifact files are the engine's to remove."""


class ExecutionReads(Protocol):
    async def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]:
        """Newest first; returns (page, total matching)."""

    async def get_execution(self, execution_id: str) -> Execution | None: ...

    async def resolve_execution_id(self, prefix: str) -> list[str]:
        """Ids starting with prefix (at most a few), for the CLI's short ids."""

    async def get_steps(self, execution_id: str) -> list[Step]:
        """All steps (branches included) of an execution, by index."""

    async def stats(self) -> StoreStats: ...

    async def optimize(self) -> list[str]:
        """ANALYZE, WAL checkpoint, PRAGMA optimize; returns what was done."""

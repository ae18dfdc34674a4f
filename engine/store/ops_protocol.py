"""The protocol of OpsConductor's records in the store (their types: engine.store.opsconductor, where
it is also found). A module of its own so that engine.store's `Store` takes it without importing the
records' dataclasses: `stepflow exec` never makes one (tests/test_startup_imports.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.store.opsconductor import (
        BranchTarget,
        HistoryEntry,
        OpsBranch,
        OpsExecution,
        OpsJob,
        Outcomes,
        SearchHit,
        TargetOutcomes,
    )


class OpsRecords(Protocol):
    # -- jobs ----------------------------------------------------------------------------------------
    async def create_ops_job(self, *, name: str, description: str, job_type: str, actions: Sequence[Mapping[str, Any]],
                             target_ids: Sequence[int], scheduled_at: datetime | None) -> OpsJob:
        """A new job, its serial `J<year><n:04>` from the year's counter in the same transaction;
        with `scheduled_at` it waits for that time (schedule_state SCHEDULED)."""

    async def get_ops_job(self, *, id: int | None = None, serial: str | None = None) -> OpsJob | None: ...

    async def list_ops_jobs(self, *, sort: str, descending: bool, limit: int, offset: int) -> tuple[list[OpsJob], int]:
        """A page by `sort` (id, name, created_at, scheduled_at, serial), and the total."""

    async def scheduled_ops_jobs(self) -> list[OpsJob]:
        """Jobs waiting for their time, soonest first."""

    async def take_scheduled_job(self, job_id: int) -> bool:
        """SCHEDULED -> SCHEDULE_STARTED, guarded: of two servers on one store, one starts it."""

    # -- executions ----------------------------------------------------------------------------------
    async def begin_ops_execution(self, job_id: int, targets: Sequence[BranchTarget]) -> OpsExecution:
        """The job's next execution (`<job serial>.<n:04>`, the job's counter) and a branch per target
        (`.<n:04>` in order), pending, in one transaction."""

    async def link_ops_execution(self, ops_execution_id: int, execution_id: str, branch_steps: Mapping[int, str]) -> None:
        """The execution running it, and each branch's step (branch id -> step id); their state is
        copied at once and follows theirs from then on."""

    async def fail_ops_execution(self, ops_execution_id: int, error: str) -> None:
        """It could not be submitted: failed, with its branches, and why."""

    async def get_ops_execution(self, *, id: int | None = None, serial: str | None = None) -> OpsExecution | None:
        """With its branches."""

    async def ops_job_executions(self, job_id: int, *, limit: int = 100) -> list[OpsExecution]:
        """Newest first, with their branches."""

    async def get_ops_branch(self, serial: str) -> OpsBranch | None: ...

    async def find_ops_serials(self, serials: Sequence[str]) -> dict[str, OpsExecution | OpsBranch]:
        """The executions and branches among `serials` that exist, by serial."""

    async def search_ops(self, text: str, *, executions: bool, branches: bool, limit: int) -> list[SearchHit]:
        """Executions and/or branches whose serial, job name or target name contains `text`
        (case-insensitive), newest first."""

    # -- targets -------------------------------------------------------------------------------------
    async def delete_idle_target(self, target_id: int) -> bool | None:
        """Delete the target unless it has pending or running branches: True deleted, False refused
        (it has some), None no such target. One guarded statement."""

    # -- figures -------------------------------------------------------------------------------------
    async def target_outcomes(self, target_id: int, since: datetime) -> Outcomes: ...

    async def target_history(self, target_id: int, *, limit: int, offset: int) -> tuple[list[HistoryEntry], int]:
        """Its branches, newest first, with their job's name; and how many there are."""

    async def execution_outcomes(self, since: datetime, *, job_id: int | None = None) -> Outcomes: ...

    async def execution_buckets(self, start: datetime, unit: str, count: int) -> list[tuple[str, Outcomes]]:
        """Outcomes of the executions created in each of `count` buckets of `unit` (hour, day, week,
        month) from `start` (a bucket's start, UTC), in order, empty ones too (without durations):
        (the bucket's start as ISO 8601 text, its outcomes)."""

    async def job_target_outcomes(self, job_id: int, since: datetime) -> list[TargetOutcomes]:
        """The job's branches per target."""

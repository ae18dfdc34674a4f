"""OpsConductor's records (engine.store.opsconductor) in SQLite, the store's part: each method is
storage.opsconductor_sql's, imported at the first call. `stepflow exec` makes none, and starts
without importing it (its statements, row maps and records: tests/test_startup_imports.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from storage.connections import Connections

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



class SqliteOps(Connections):
    # -- jobs ----------------------------------------------------------------------------------------
    async def create_ops_job(self, *, name: str, description: str, job_type: str, actions: Sequence[Mapping[str, Any]],
                             target_ids: Sequence[int], scheduled_at: datetime | None) -> OpsJob:
        from storage import opsconductor_sql

        return await opsconductor_sql.create_ops_job(self, name=name, description=description, job_type=job_type,
                                           actions=actions, target_ids=target_ids, scheduled_at=scheduled_at)

    async def get_ops_job(self, *, id: int | None = None, serial: str | None = None) -> OpsJob | None:
        from storage import opsconductor_sql

        return await opsconductor_sql.get_ops_job(self, id=id, serial=serial)

    async def list_ops_jobs(self, *, sort: str, descending: bool, limit: int, offset: int) -> tuple[list[OpsJob], int]:
        from storage import opsconductor_sql

        return await opsconductor_sql.list_ops_jobs(self, sort=sort, descending=descending, limit=limit, offset=offset)

    async def scheduled_ops_jobs(self) -> list[OpsJob]:
        from storage import opsconductor_sql

        return await opsconductor_sql.scheduled_ops_jobs(self)

    async def take_scheduled_job(self, job_id: int) -> bool:
        from storage import opsconductor_sql

        return await opsconductor_sql.take_scheduled_job(self, job_id)

    # -- executions ----------------------------------------------------------------------------------
    async def begin_ops_execution(self, job_id: int, targets: Sequence[BranchTarget]) -> OpsExecution:
        from storage import opsconductor_sql

        return await opsconductor_sql.begin_ops_execution(self, job_id, targets)

    async def link_ops_execution(self, ops_execution_id: int, execution_id: str,
                                 branch_steps: Mapping[int, str]) -> None:
        from storage import opsconductor_sql

        return await opsconductor_sql.link_ops_execution(self, ops_execution_id, execution_id, branch_steps)

    async def fail_ops_execution(self, ops_execution_id: int, error: str) -> None:
        from storage import opsconductor_sql

        return await opsconductor_sql.fail_ops_execution(self, ops_execution_id, error)

    async def get_ops_execution(self, *, id: int | None = None, serial: str | None = None) -> OpsExecution | None:
        from storage import opsconductor_sql

        return await opsconductor_sql.get_ops_execution(self, id=id, serial=serial)

    async def ops_job_executions(self, job_id: int, *, limit: int = 100) -> list[OpsExecution]:
        from storage import opsconductor_sql

        return await opsconductor_sql.ops_job_executions(self, job_id, limit=limit)

    async def get_ops_branch(self, serial: str) -> OpsBranch | None:
        from storage import opsconductor_sql

        return await opsconductor_sql.get_ops_branch(self, serial)

    async def find_ops_serials(self, serials: Sequence[str]) -> dict[str, OpsExecution | OpsBranch]:
        from storage import opsconductor_sql

        return await opsconductor_sql.find_ops_serials(self, serials)

    async def search_ops(self, text: str, *, executions: bool, branches: bool, limit: int) -> list[SearchHit]:
        from storage import opsconductor_sql

        return await opsconductor_sql.search_ops(self, text, executions=executions, branches=branches, limit=limit)

    # -- targets -------------------------------------------------------------------------------------
    async def delete_idle_target(self, target_id: int) -> bool | None:
        from storage import opsconductor_sql

        return await opsconductor_sql.delete_idle_target(self, target_id)

    # -- figures -------------------------------------------------------------------------------------
    async def target_outcomes(self, target_id: int, since: datetime) -> Outcomes:
        from storage import opsconductor_sql

        return await opsconductor_sql.target_outcomes(self, target_id, since)

    async def target_history(self, target_id: int, *, limit: int, offset: int) -> tuple[list[HistoryEntry], int]:
        from storage import opsconductor_sql

        return await opsconductor_sql.target_history(self, target_id, limit=limit, offset=offset)

    async def execution_outcomes(self, since: datetime, *, job_id: int | None = None) -> Outcomes:
        from storage import opsconductor_sql

        return await opsconductor_sql.execution_outcomes(self, since, job_id=job_id)

    async def execution_buckets(self, start: datetime, unit: str, count: int) -> list[tuple[str, Outcomes]]:
        from storage import opsconductor_sql

        return await opsconductor_sql.execution_buckets(self, start, unit, count)

    async def job_target_outcomes(self, job_id: int, since: datetime) -> list[TargetOutcomes]:
        from storage import opsconductor_sql

        return await opsconductor_sql.job_target_outcomes(self, job_id, since)

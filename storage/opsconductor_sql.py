"""OpsConductor's records (engine.store.opsconductor) in SQLite: what `storage.opsconductor.SqliteOps`
does, imported at its first call (`stepflow exec` never makes one). Jobs, executions and branches with
their serials, and the figures over them.

Serials come from counter rows (storage.registry's upsert) in the transaction that inserts what they
name: a job's `J<year><n:04>` from the year's counter, an execution's `.<n:04>` from its job's, its
branches' `.<n:04>` numbered in that same transaction. A failed insert rolls its counter back: no gaps.

The rows copy their execution's and branch steps' status, times and exit code (the triggers of
storage.tables), so every figure is a sum over one table through a covering index: ~100,000 branches
answer in milliseconds where a join to the steps took ~100 ms. Buckets of the analytics are one
correlated sum per bucket over an index range, with no sort (GROUP BY over 100,000 rows sorted them).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.errors import NotFound
from engine.model import new_id, utcnow
from engine.store.opsconductor import (
    OPEN_STATUSES,
    SCHEDULE_STARTED,
    SCHEDULED,
    TARGET_KIND,
    BranchTarget,
    HistoryEntry,
    OpsBranch,
    OpsExecution,
    OpsJob,
    Outcomes,
    SearchHit,
    TargetOutcomes,
)
from storage import columns
from storage.columns import to_iso
from storage.registry_sql import _NEXT_VALUE
from storage.rows import RowMap

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from storage.opsconductor import SqliteOps

JOBS = RowMap(OpsJob, columns.OPS_JOBS, skip=())
EXECUTIONS = RowMap(OpsExecution, columns.OPS_EXECUTIONS, skip=())
BRANCHES = RowMap(OpsBranch, columns.OPS_BRANCHES, skip=())

_JOB_COLUMNS = JOBS.select
_EXECUTION_COLUMNS = EXECUTIONS.select
_BRANCH_COLUMNS = BRANCHES.select
_LAST_STATUS = "(SELECT e.status FROM ops_executions e WHERE e.job_id = ops_jobs.id ORDER BY e.number DESC LIMIT 1)"
_SELECT_JOB = f"SELECT {_JOB_COLUMNS}, {_LAST_STATUS} FROM ops_jobs"
#: what the list may be sorted by -> column
JOB_SORTS = {"id": "id", "name": "name", "created_at": "created_at", "scheduled_at": "scheduled_at",
             "serial": "serial", "job_serial": "serial"}
_OPEN = ", ".join(f"'{s}'" for s in OPEN_STATUSES)
_SECONDS = "(julianday(x.completed_at) - julianday(x.started_at)) * 86400.0"
#: counts over rows of ops_executions or ops_branches, as one JSON array (see _outcomes)
_OUTCOMES = ("json_array(count(*), total(status = 'completed'), total(status = 'failed'), "
             "total(status IN ('cancelled', 'skipped')), avg(duration))")


def _insert(table: str, columns: Sequence[str], returning: str) -> str:
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"RETURNING {returning}")


_INSERT_JOB = _insert("ops_jobs", JOBS.columns[1:], JOBS.returning)
_INSERT_EXECUTION = _insert("ops_executions", EXECUTIONS.columns[1:], EXECUTIONS.returning)
_INSERT_BRANCH = _insert("ops_branches", BRANCHES.columns[1:], BRANCHES.returning)


async def _next_value(conn: AsyncConnection, name: str) -> int:
    """A counter's next value (storage.registry's upsert) in the caller's write transaction."""
    return int((await conn.exec_driver_sql(_NEXT_VALUE, (name,))).scalar_one())


def _outcomes(text: str | None) -> Outcomes:
    total, completed, failed, other, average = json.loads(text) if text else (0, 0, 0, 0, None)
    return Outcomes(int(total), int(completed), int(failed), int(other),
                    None if average is None else float(average))


# -- SqliteOps's methods (storage.opsconductor), the store first ------------------------------------
async def create_ops_job(store: SqliteOps, *, name: str, description: str, job_type: str,
                         actions: Sequence[Mapping[str, Any]], target_ids: Sequence[int],
                         scheduled_at: datetime | None) -> OpsJob:
    now = utcnow()
    job = OpsJob(id=0, uuid=new_id(), serial="", name=name, description=description, job_type=job_type,
                 actions=[dict(a) for a in actions], target_ids=list(target_ids), scheduled_at=scheduled_at,
                 schedule_state=SCHEDULED if scheduled_at is not None else None, created_at=now, updated_at=now)
    year = now.astimezone(UTC).year
    async with store._write() as conn:
        job.serial = f"J{year}{await _next_value(conn, f'opsconductor.jobs.{year}'):04d}"
        row = (await conn.exec_driver_sql(_INSERT_JOB, JOBS.values(job)[1:])).one()
    return JOBS.from_values(row)


async def get_ops_job(store: SqliteOps, *, id: int | None = None, serial: str | None = None) -> OpsJob | None:
    column, value = ("id", id) if id is not None else ("serial", serial)
    return await store._reader.run(_get_job, column, value, inline=True)


async def list_ops_jobs(store: SqliteOps,
                        *, sort: str, descending: bool, limit: int, offset: int) -> tuple[list[OpsJob], int]:
    column = JOB_SORTS[sort]
    return await store._reader.run(_list_jobs, column, descending, limit, offset, snapshot=True, inline=True)


async def scheduled_ops_jobs(store: SqliteOps) -> list[OpsJob]:
    return await store._reader.run(_scheduled, inline=True)


async def take_scheduled_job(store: SqliteOps, job_id: int) -> bool:
    async with store._write() as conn:
        result = await conn.exec_driver_sql(
            "UPDATE ops_jobs SET schedule_state = ?, updated_at = ? WHERE id = ? AND schedule_state = ?",
            (SCHEDULE_STARTED, to_iso(utcnow()), job_id, SCHEDULED))
    return result.rowcount > 0


async def begin_ops_execution(store: SqliteOps, job_id: int, targets: Sequence[BranchTarget]) -> OpsExecution:
    now = utcnow()
    async with store._write() as conn:
        job_serial = (await conn.exec_driver_sql("SELECT serial FROM ops_jobs WHERE id = ?", (job_id,))).scalar()
        if job_serial is None:
            raise NotFound(f"no job {job_id}")
        number = await _next_value(conn, f"opsconductor.job.{job_id}.executions")
        serial = f"{job_serial}.{number:04d}"
        draft = OpsExecution(id=0, uuid=new_id(), serial=serial, job_id=job_id, number=number, created_at=now)
        execution = EXECUTIONS.from_values((await conn.exec_driver_sql(
            _INSERT_EXECUTION, EXECUTIONS.values(draft)[1:])).one())
        for n, target in enumerate(targets, 1):
            branch = OpsBranch(id=0, uuid=new_id(), serial=f"{serial}.{n:04d}", ops_execution_id=execution.id,
                               number=n, job_id=job_id, target_id=target.target_id,
                               target_serial=target.target_serial, target_name=target.target_name, created_at=now)
            row = (await conn.exec_driver_sql(_INSERT_BRANCH, BRANCHES.values(branch)[1:])).one()
            execution.branches.append(BRANCHES.from_values(row))
    return execution


async def link_ops_execution(store: SqliteOps,
                             ops_execution_id: int, execution_id: str, branch_steps: Mapping[int, str]) -> None:
    async with store._write() as conn:
        await conn.exec_driver_sql(
            "UPDATE ops_executions SET execution_pk = x.pk, execution_id = x.id, status = x.status, "
            f"started_at = x.started_at, completed_at = x.completed_at, duration = {_SECONDS}, "
            "error = x.error_message FROM executions x WHERE x.id = ? AND ops_executions.id = ?",
            (execution_id, ops_execution_id))
        for branch_id, step_id in branch_steps.items():
            await _link_branch(conn, branch_id, step_id)


async def fail_ops_execution(store: SqliteOps, ops_execution_id: int, error: str) -> None:
    now = to_iso(utcnow())
    async with store._write() as conn:
        await conn.exec_driver_sql(
            "UPDATE ops_executions SET status = 'failed', error = ?, started_at = coalesce(started_at, ?), "
            "completed_at = ? WHERE id = ?", (error, now, now, ops_execution_id))
        await conn.exec_driver_sql(
            "UPDATE ops_branches SET status = 'failed', error = ?, completed_at = ? WHERE ops_execution_id = ?",
            (error, now, ops_execution_id))


async def get_ops_execution(store: SqliteOps,
                            *, id: int | None = None, serial: str | None = None) -> OpsExecution | None:
    column, value = ("id", id) if id is not None else ("serial", serial)
    return await store._reader.run(_get_execution, column, value, snapshot=True, inline=True)


async def ops_job_executions(store: SqliteOps, job_id: int, *, limit: int = 100) -> list[OpsExecution]:
    return await store._reader.run(_job_executions, job_id, limit, snapshot=True, inline=True)


async def get_ops_branch(store: SqliteOps, serial: str) -> OpsBranch | None:
    return await store._reader.run(_get_branch, serial, inline=True)


async def find_ops_serials(store: SqliteOps, serials: Sequence[str]) -> dict[str, OpsExecution | OpsBranch]:
    return await store._reader.run(_find_serials, list(serials), snapshot=True, inline=True)


async def search_ops(store: SqliteOps,
                     text: str, *, executions: bool, branches: bool, limit: int) -> list[SearchHit]:
    return await store._reader.run(_search, text, executions, branches, limit, snapshot=True)


async def delete_idle_target(store: SqliteOps, target_id: int) -> bool | None:
    async with store._write() as conn:
        result = await conn.exec_driver_sql(
            "DELETE FROM registry WHERE kind = ? AND id = ? AND NOT EXISTS (SELECT 1 FROM ops_branches "
            f"WHERE target_id = ? AND status IN ({_OPEN}))", (TARGET_KIND, target_id, target_id))
        if result.rowcount:
            return True
        exists = (await conn.exec_driver_sql("SELECT 1 FROM registry WHERE kind = ? AND id = ?",
                                             (TARGET_KIND, target_id))).first()
    return False if exists else None


async def target_outcomes(store: SqliteOps, target_id: int, since: datetime) -> Outcomes:
    return await store._reader.run(_one_outcome, f"SELECT {_OUTCOMES} FROM ops_branches "
                                  "WHERE target_id = ? AND created_at >= ?", (target_id, to_iso(since)))


async def target_history(store: SqliteOps,
                         target_id: int, *, limit: int, offset: int) -> tuple[list[HistoryEntry], int]:
    return await store._reader.run(_history, target_id, limit, offset, snapshot=True)


async def execution_outcomes(store: SqliteOps, since: datetime, *, job_id: int | None = None) -> Outcomes:
    if job_id is None:
        return await store._reader.run(_one_outcome, f"SELECT {_OUTCOMES} FROM ops_executions WHERE created_at >= ?",
                                      (to_iso(since),))
    return await store._reader.run(_one_outcome, f"SELECT {_OUTCOMES} FROM ops_executions "
                                  "WHERE job_id = ? AND created_at >= ?", (job_id, to_iso(since)))


async def execution_buckets(store: SqliteOps,
                            start: datetime, unit: str, count: int) -> list[tuple[str, Outcomes]]:
    return await store._reader.run(_buckets, to_iso(start), _STEPS[unit], count)


async def job_target_outcomes(store: SqliteOps, job_id: int, since: datetime) -> list[TargetOutcomes]:
    return await store._reader.run(_job_targets, job_id, to_iso(since), snapshot=True)


async def _link_branch(conn: AsyncConnection, branch_id: int, step_id: str) -> None:
    await conn.exec_driver_sql(
        "UPDATE ops_branches SET step_pk = x.pk, step_id = x.id, status = x.status, started_at = x.started_at, "
        f"completed_at = x.completed_at, duration = {_SECONDS}, exit_code = x.exit_code, error = x.error_message "
        "FROM steps x WHERE x.id = ? AND ops_branches.id = ?", (step_id, branch_id))


# -- reads, on a reader connection (storage.reads) ------------------------------------------------------
def _job_of(row: Sequence[Any]) -> OpsJob:
    job = JOBS.from_values(row[:-1])
    job.last_status = row[-1]
    return job


def _get_job(conn: sqlite3.Connection, column: str, value: object) -> OpsJob | None:
    row = conn.execute(f"{_SELECT_JOB} WHERE {column} = ?", (value,)).fetchone()
    return None if row is None else _job_of(row)


def _list_jobs(conn: sqlite3.Connection, column: str, descending: bool, limit: int,
               offset: int) -> tuple[list[OpsJob], int]:
    order = "DESC" if descending else "ASC"
    # NULLs (never scheduled) last either way; the id breaks ties
    rows = conn.execute(f"{_SELECT_JOB} ORDER BY {column} IS NULL, {column} {order}, id {order} LIMIT ? OFFSET ?",
                        (max(limit, 0), max(offset, 0))).fetchall()
    total = conn.execute("SELECT count(*) FROM ops_jobs").fetchone()[0]
    return [_job_of(r) for r in rows], total


def _scheduled(conn: sqlite3.Connection) -> list[OpsJob]:
    rows = conn.execute(f"{_SELECT_JOB} WHERE schedule_state = ? ORDER BY scheduled_at", (SCHEDULED,)).fetchall()
    return [_job_of(r) for r in rows]


def _branches_of(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, list[OpsBranch]]:
    found: dict[int, list[OpsBranch]] = {i: [] for i in ids}
    if not ids:
        return found
    marks = ", ".join("?" * len(ids))
    for row in conn.execute(f"SELECT {_BRANCH_COLUMNS} FROM ops_branches WHERE ops_execution_id IN ({marks}) "
                            "ORDER BY ops_execution_id, number", list(ids)):
        branch = BRANCHES.from_values(row)
        found[branch.ops_execution_id].append(branch)
    return found


def _get_execution(conn: sqlite3.Connection, column: str, value: object) -> OpsExecution | None:
    row = conn.execute(f"SELECT {_EXECUTION_COLUMNS} FROM ops_executions WHERE {column} = ?", (value,)).fetchone()
    if row is None:
        return None
    execution = EXECUTIONS.from_values(row)
    execution.branches = _branches_of(conn, [execution.id])[execution.id]
    return execution


def _job_executions(conn: sqlite3.Connection, job_id: int, limit: int) -> list[OpsExecution]:
    rows = conn.execute(f"SELECT {_EXECUTION_COLUMNS} FROM ops_executions WHERE job_id = ? ORDER BY number DESC "
                        "LIMIT ?", (job_id, limit)).fetchall()
    executions = [EXECUTIONS.from_values(r) for r in rows]
    branches = _branches_of(conn, [e.id for e in executions])
    for execution in executions:
        execution.branches = branches[execution.id]
    return executions


def _get_branch(conn: sqlite3.Connection, serial: str) -> OpsBranch | None:
    row = conn.execute(f"SELECT {_BRANCH_COLUMNS} FROM ops_branches WHERE serial = ?", (serial,)).fetchone()
    return None if row is None else BRANCHES.from_values(row)


def _find_serials(conn: sqlite3.Connection, serials: list[str]) -> dict[str, OpsExecution | OpsBranch]:
    found: dict[str, OpsExecution | OpsBranch] = {}
    for start in range(0, len(serials), 500):
        chunk = serials[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(f"SELECT {_EXECUTION_COLUMNS} FROM ops_executions WHERE serial IN ({marks})", chunk):
            execution = EXECUTIONS.from_values(row)
            found[execution.serial] = execution
        for row in conn.execute(f"SELECT {_BRANCH_COLUMNS} FROM ops_branches WHERE serial IN ({marks})", chunk):
            branch = BRANCHES.from_values(row)
            found[branch.serial] = branch
    return found


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _search(conn: sqlite3.Connection, text: str, executions: bool, branches: bool, limit: int) -> list[SearchHit]:
    pattern = _like(text)
    hits: list[SearchHit] = []
    jobs: dict[int, tuple[str, str]] = {}

    def job(job_id: int) -> tuple[str, str]:
        if job_id not in jobs:
            row = conn.execute("SELECT serial, name FROM ops_jobs WHERE id = ?", (job_id,)).fetchone()
            jobs[job_id] = (row[0], row[1]) if row else ("", "")
        return jobs[job_id]

    if executions:
        rows = conn.execute(
            f"SELECT {_EXECUTION_COLUMNS} FROM ops_executions JOIN ops_jobs j ON j.id = ops_executions.job_id "
            "WHERE ops_executions.serial LIKE ?1 ESCAPE '\\' OR j.name LIKE ?1 ESCAPE '\\' OR EXISTS (SELECT 1 "
            "FROM ops_branches b WHERE b.ops_execution_id = ops_executions.id AND b.target_name LIKE ?1 ESCAPE '\\') "
            "ORDER BY ops_executions.id DESC LIMIT ?2", (pattern, limit)).fetchall()
        found = [EXECUTIONS.from_values(r) for r in rows]
        by_id = _branches_of(conn, [e.id for e in found])
        for execution in found:
            execution.branches = by_id[execution.id]
            hits.append(SearchHit(execution, *job(execution.job_id)))
    if branches and len(hits) < limit:
        rows = conn.execute(
            f"SELECT {_BRANCH_COLUMNS} FROM ops_branches JOIN ops_jobs j ON j.id = ops_branches.job_id "
            "WHERE ops_branches.serial LIKE ?1 ESCAPE '\\' OR j.name LIKE ?1 ESCAPE '\\' "
            "OR ops_branches.target_name LIKE ?1 ESCAPE '\\' ORDER BY ops_branches.id DESC LIMIT ?2",
            (pattern, limit - len(hits))).fetchall()
        for row in rows:
            branch = BRANCHES.from_values(row)
            parent = _get_execution(conn, "id", branch.ops_execution_id)
            if parent is not None:
                hits.append(SearchHit(parent, *job(branch.job_id), branch=branch))
    return hits


def _one_outcome(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Outcomes:
    return _outcomes(conn.execute(sql, params).fetchone()[0])


def _history(conn: sqlite3.Connection, target_id: int, limit: int, offset: int) -> tuple[list[HistoryEntry], int]:
    rows = conn.execute(
        f"SELECT {_BRANCH_COLUMNS}, (SELECT name FROM ops_jobs WHERE id = ops_branches.job_id) FROM ops_branches "
        "WHERE target_id = ? ORDER BY created_at DESC LIMIT ? OFFSET ?", (target_id, limit, offset)).fetchall()
    total = conn.execute("SELECT count(*) FROM ops_branches WHERE target_id = ?", (target_id,)).fetchone()[0]
    return [HistoryEntry(BRANCHES.from_values(r[:-1]), r[-1] or "") for r in rows], total


#: a bucket's length, as SQLite's date modifiers say it
_STEPS = {"hour": "+1 hour", "day": "+1 day", "week": "+7 days", "month": "+1 month"}
#: text like storage.tables.to_iso's, so that bounds compare with the stored times as text
_ISO = "'%Y-%m-%dT%H:%M:%S.000000+00:00'"


def _buckets(conn: sqlite3.Connection, start: str, step: str, count: int) -> list[tuple[str, Outcomes]]:
    # the bounds are made in SQL, each bucket one sum over an index range (no sort, no row to Python)
    rows = conn.execute(
        f"WITH RECURSIVE bk(i, s, e) AS (SELECT 0, ?1, strftime({_ISO}, ?1, ?2) UNION ALL "
        f"SELECT i + 1, e, strftime({_ISO}, e, ?2) FROM bk WHERE i + 1 < ?3) "
        "SELECT bk.s, (SELECT count(*) || ' ' || ifnull(sum(status = 'completed'), 0) || ' ' "
        "|| ifnull(sum(status = 'failed'), 0) || ' ' || ifnull(sum(status IN ('cancelled', 'skipped')), 0) "
        "FROM ops_executions WHERE created_at >= bk.s AND created_at < bk.e) FROM bk", (start, step, count)).fetchall()
    return [(s, _spaced(counts)) for s, counts in rows]


def _spaced(text: str) -> Outcomes:
    total, completed, failed, other = text.split(" ")
    return Outcomes(int(total), int(completed), int(failed), int(other))


def _job_targets(conn: sqlite3.Connection, job_id: int, since: str) -> list[TargetOutcomes]:
    rows = conn.execute(
        "SELECT t.target_id, "
        "(SELECT target_serial || char(10) || target_name FROM ops_branches b WHERE b.job_id = ?1 "
        " AND b.target_id = t.target_id ORDER BY created_at DESC LIMIT 1), "
        f"(SELECT {_OUTCOMES} FROM ops_branches WHERE job_id = ?1 AND target_id = t.target_id AND created_at >= ?2) "
        "FROM (SELECT DISTINCT target_id FROM ops_branches WHERE job_id = ?1) t ORDER BY t.target_id",
        (job_id, since)).fetchall()
    found = []
    for target_id, names, outcomes in rows:
        serial, _, name = (names or "\n").partition("\n")
        counted = _outcomes(outcomes)
        if counted.total:
            found.append(TargetOutcomes(target_id, serial, name, counted))
    return found


__all__ = ["JOB_SORTS", "SqliteOps"]

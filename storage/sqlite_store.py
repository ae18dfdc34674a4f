"""The SQLite store: the engine's `Store` (see storage.connections: plain sqlite3 for what the engine
does, SQLAlchemy's async engine made at the first use of the rest), and its executions' part: the
events' writes, the reads, the database itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Unpack

from engine.events import Event
from engine.model import (
    AbortReason,
    Artifact,
    ArtifactFilter,
    Execution,
    ExecutionFilter,
    ExecutionStatus,
    LogLine,
    Step,
    StepStatus,
    utcnow,
)
from engine.store import StoreStats
from engine.store.logs import LogRange, LogSelection
from engine.surrogates import replace_surrogates
from storage import pragmas, queries
from storage.columns import to_iso
from storage.opsconductor import SqliteOps
from storage.queue import SqliteQueue
from storage.registry import SqliteRegistry
from storage.writes import BatchWriter

LOST_MESSAGE = "the engine running it stopped unexpectedly"
#: how many ids `resolve_execution_id` returns at most
MAX_RESOLVED = 10

_OPEN = f"status IN ('{ExecutionStatus.PENDING.value}', '{ExecutionStatus.RUNNING.value}')"
_FAIL = (f"UPDATE executions SET status = '{ExecutionStatus.FAILED.value}', error_message = ?, completed_at = ?, "
         f"started_at = coalesce(started_at, ?) WHERE id = ? AND {_OPEN}")
_TAKE = (f"UPDATE executions SET owner = ? WHERE id = ? AND status = '{ExecutionStatus.PENDING.value}' "
         "AND admitted_at IS NULL AND owner = ?")
_TAKE_UNOWNED = (f"UPDATE executions SET owner = ? WHERE id = ? AND status = '{ExecutionStatus.PENDING.value}' "
                 "AND admitted_at IS NULL AND owner IS NULL")
_LOST_STEPS = ("UPDATE steps SET status = ?, abort_reason = ?, error_message = ?, completed_at = ? "
               "WHERE execution_id = ? AND status = ?")
# as engine.execution.transitions does for a terminal status never started
_LOST = (f"UPDATE executions SET status = '{ExecutionStatus.FAILED.value}', abort_reason = ?, error_message = ?, "
         f"completed_at = ?, started_at = coalesce(started_at, ?) WHERE id = ? AND {_OPEN}")


class SqliteStore(SqliteQueue, SqliteRegistry, SqliteOps):
    """Every protocol of engine.store: executions here, the work queue in storage.queue, counters
    and the registry in storage.registry, OpsConductor's records in storage.opsconductor,
    connections in storage.connections."""

    # -- writes ----------------------------------------------------------------------------------
    async def apply(self, events: Sequence[Event]) -> dict[str, str]:
        if not events:
            return {}
        batch = BatchWriter(json_keys=self._json_keys)
        batch.add(events)
        await self._write_batch(batch.write)
        return batch.refused

    async def fail_execution(self, execution_id: str, error: str) -> bool:
        now = to_iso(utcnow())
        return await self._write_inline(_changed, _FAIL, (replace_surrogates(error), now, now, execution_id))

    async def take_queued(self, execution_id: str, owner: str, was: str | None) -> bool:
        sql, params = (_TAKE_UNOWNED, (owner, execution_id)) if was is None else (_TAKE, (owner, execution_id, was))
        return await self._write_inline(_changed, sql, params)

    async def mark_lost(self, owner_alive: Callable[[str | None], bool] | None = None) -> list[str]:
        # inline: most of the time there are none, and the statement is one look at an index
        return await self._write_inline(_mark_lost, owner_alive, to_iso(utcnow()))

    async def delete_execution(self, execution_id: str) -> bool:
        # on the write connection's thread: its lines and steps go with it (foreign keys), any number
        return await self._write_batch(lambda conn: _changed(conn, "DELETE FROM executions WHERE id = ?",
                                                             (execution_id,)))

    # -- executions and steps ----------------------------------------------------------------------
    # Reads: plain SQL (storage.queries) through storage.reads. Those by index of at most a page of
    # rows run inline on the loop (the caller turns each row into a response there anyway), within
    # a time budget; log lines, many rows, on a reader thread.
    async def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]:
        return await self._reader.run(queries.list_executions, flt, snapshot=True, inline=True)

    async def get_execution(self, execution_id: str) -> Execution | None:
        return await self._reader.run(queries.get_execution, execution_id, inline=True)

    async def resolve_execution_id(self, prefix: str) -> list[str]:
        return await self._reader.run(queries.resolve_execution_id, prefix, MAX_RESOLVED, inline=True)

    async def get_steps(self, execution_id: str) -> list[Step]:
        return await self._reader.run(queries.get_steps, execution_id, inline=True)

    # -- artifacts -------------------------------------------------------------------------------
    async def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]:
        return await self._reader.run(queries.list_artifacts, flt, snapshot=True, inline=True)

    async def get_artifact(self, artifact_id: str) -> Artifact | None:
        return await self._reader.run(queries.get_artifact, artifact_id, inline=True)

    # -- log lines -------------------------------------------------------------------------------
    async def get_log_lines(
        self,
        execution_id: str,
        **selection: Unpack[LogSelection],
    ) -> list[LogLine]:
        r = LogRange.of(selection)
        return await self._reader.run(queries.get_log_lines, execution_id, r.step_ids, r.after_seq, r.before_seq,
                                      r.limit, r.newest_first, r.offset, snapshot=True)

    async def count_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None) -> int:
        return await self._reader.run(queries.count_log_lines, execution_id, step_ids, snapshot=True)

    # -- the database itself ---------------------------------------------------------------------
    async def stats(self) -> StoreStats:
        # through SQLAlchemy (what `serve` and the TUI ask for), imported here: `exec` never asks
        from sqlalchemy import String, func, select, type_coerce

        from storage.tables import artifacts, executions, log_spans, steps

        def count(table: Any) -> Any:
            return select(func.count()).select_from(table).scalar_subquery()

        created_text = type_coerce(executions.c.created_at, String)
        async with self._read() as conn:
            totals = (
                await conn.execute(
                    select(
                        count(executions), count(steps), count(artifacts),
                        # the spans' sum: a count(*) would walk every line
                        select(func.coalesce(func.sum(log_spans.c.lines), 0)).scalar_subquery(),
                        func.min(created_text), func.max(created_text),
                    )
                )
            ).one()
            # in SQL over the stored timestamps (ISO text with an offset, which julianday reads)
            avg_duration = (
                await conn.exec_driver_sql(
                    "SELECT avg((julianday(completed_at) - julianday(started_at)) * 86400.0) FROM executions"
                    " WHERE status IN ('completed', 'failed', 'cancelled')"
                    " AND started_at IS NOT NULL AND completed_at IS NOT NULL"
                )
            ).scalar()
            by_status: dict[str, int] = dict(
                (await conn.execute(select(executions.c.status, func.count()).group_by(executions.c.status))).all()
            )
            journal_mode = await conn.exec_driver_sql("PRAGMA journal_mode")
            mode = str(journal_mode.scalar())
            cache_size = int((await conn.exec_driver_sql("PRAGMA cache_size")).scalar() or 0)
            page_size = int((await conn.exec_driver_sql("PRAGMA page_size")).scalar() or 4096)
        return StoreStats(
            total_executions=totals[0],
            by_status={s.value: by_status.get(s.value, 0) for s in ExecutionStatus},
            total_steps=totals[1],
            total_artifacts=totals[2],
            total_log_lines=totals[3],
            database_size_bytes=await asyncio.to_thread(self._size_on_disk),
            wal_mode=mode,
            # in pages, as SQLite counts it when given a positive number (negative means KiB)
            cache_size=cache_size if cache_size >= 0 else -cache_size * 1024 // page_size,
            storage_path=str(self.path),
            oldest_execution=totals[4],
            newest_execution=totals[5],
            avg_duration_seconds=None if avg_duration is None else float(avg_duration),
        )

    def _size_on_disk(self) -> int:
        return sum(_file_size(Path(f"{self.path}{suffix}")) for suffix in ("", "-wal", "-shm"))

    async def optimize(self) -> list[str]:
        """ANALYZE (sampled: see analysis_limit in storage.pragmas), PRAGMA optimize, then a WAL
        checkpoint that truncates the WAL file. Holds this process's write turn meanwhile."""
        if not self._open:
            raise RuntimeError("the store is not open")
        async with self._write_lock:
            return await asyncio.to_thread(_optimize, self.path)


# -- writes, inline (storage.inline_writes) or on the write connection (storage.write_connection) ---------
def _changed(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> bool:
    return conn.execute(sql, params).rowcount > 0


def _mark_lost(conn: sqlite3.Connection, owner_alive: Callable[[str | None], bool] | None, now: str) -> list[str]:
    lost = [i for i, owner in queries.held_executions(conn) if owner_alive is None or not owner_alive(owner)]
    if not lost:
        return []
    reason = AbortReason.ENGINE_LOST.value
    for was, becomes in ((StepStatus.RUNNING, StepStatus.FAILED), (StepStatus.PENDING, StepStatus.SKIPPED)):
        conn.executemany(_LOST_STEPS, [(becomes.value, reason, LOST_MESSAGE, now, i, was.value) for i in lost])
    conn.executemany(_LOST, [(reason, LOST_MESSAGE, now, now, i) for i in lost])
    return lost


def _optimize(path: Path) -> list[str]:
    # a connection of its own, in autocommit: a checkpoint cannot run inside a transaction
    db = sqlite3.connect(path, isolation_level=None)
    try:
        pragmas.apply(db)
        done = []
        db.execute("ANALYZE").fetchall()
        done.append("ANALYZE: refreshed the query planner's statistics")
        db.execute("PRAGMA optimize").fetchall()
        done.append("PRAGMA optimize: let SQLite tune what it found worth it")
        wal_before = _file_size(Path(f"{path}-wal"))
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        db.close()
    if busy:
        done.append(f"PRAGMA wal_checkpoint(TRUNCATE): WAL of {_human(wal_before)} partly copied back; "
                    "a reader still uses it, so it was not truncated")
    else:
        done.append(f"PRAGMA wal_checkpoint(TRUNCATE): WAL of {_human(wal_before)} copied back "
                    "into the database and truncated")
    return done


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"

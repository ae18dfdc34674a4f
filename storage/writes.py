"""The write path: one batch of events becomes the statements of one transaction.

Consecutive events that write the same way are sent as one `executemany` (a burst of step
snapshots, a run of log lines), in the order they came, so a batch costs a few round trips to
SQLite's thread instead of one per event.

Snapshots are upserts guarded by the transition tables: the row changes only when the stored status
may move to the snapshot's status (or is the same), so a late `ExecutionUpdated` carrying "running"
never resurrects a finished execution. The guard is one SQL expression for every row (the allowed
(from, to) pairs written out), which is what lets a run of snapshots go in one `executemany`.

A row the database refuses (a step of an unknown execution, say) is logged and skipped; it does not
fail the batch: the store writer would retry and then drop the whole batch, losing the good rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC
from enum import StrEnum
from itertools import chain, count, repeat
from typing import Any, TypeVar

from sqlalchemy import Table, bindparam, delete, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable

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
from engine.model import Step
from engine.transitions import EXECUTION_TRANSITIONS, STEP_TRANSITIONS
from storage.driver import driver_connection
from storage.rows import artifact_row, execution_row, step_row
from storage.tables import artifacts, executions, steps

log = logging.getLogger(__name__)

S = TypeVar("S", bound=StrEnum)

#: the one statement of the hot path, sent through the driver (no SQLAlchemy per-row work).
#: OR IGNORE: a repeated (execution, seq) is an engine bug, but failing the statement would fail
#: the whole batch and, after the writer's retries, lose it.
INSERT_LINES = (
    "INSERT OR IGNORE INTO log_lines (execution_pk, seq, step_pk, stream, ts, text) VALUES (?, ?, ?, ?, ?, ?)"
)


def guard_sql(table: str, transitions: Mapping[S, frozenset[S]]) -> str:
    """`excluded.status` may replace `<table>.status`: the same status, or an allowed transition."""
    pairs = sorted((src.value, to.value) for to, sources in transitions.items() for src in sources)
    allowed = ", ".join(f"('{src}', '{to}')" for src, to in pairs)
    return f"{table}.status = excluded.status OR ({table}.status, excluded.status) IN (VALUES {allowed})"


def _upsert(table: Table, guard: str | None) -> Executable:
    stmt = sqlite_insert(table)
    changed = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in ("pk", "id")}
    return stmt.on_conflict_do_update(
        index_elements=[table.c.id], set_=changed, where=None if guard is None else text(guard)
    )


#: what each kind of pending row is written with
STATEMENTS: dict[str, Executable] = {
    "execution": _upsert(executions, guard_sql("executions", EXECUTION_TRANSITIONS)),
    "step": _upsert(steps, guard_sql("steps", STEP_TRANSITIONS)),
    "artifact": _upsert(artifacts, None),
    "artifact deletion": delete(artifacts).where(artifacts.c.id == bindparam("id")),
    "execution deletion": delete(executions).where(executions.c.id == bindparam("id")),
}
#: rows whose misses are expected (a snapshot older than the stored status) and only logged
_GUARDED = frozenset({"execution", "step"})
_LINES = "lines"


class BatchWriter:
    """Turns events into statements on one connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._kind: str | None = None
        self._pending: list[Any] = []
        # id -> integer key, for the log lines of this batch
        self._execution_pks: dict[str, int] = {}
        self._step_pks: dict[str, int] = {}
        self.lines_written = 0

    async def write(self, events: Iterable[Event]) -> None:
        for event in events:
            await self._add(event)
        await self._flush()

    async def _add(self, event: Event) -> None:
        match event:
            case LinesLogged():
                await self._push(_LINES, event)
            case ExecutionCreated(execution=execution, steps=created):
                await self._push("execution", execution_row(execution))
                for step in parents_first(created):
                    await self._push("step", step_row(step))
            case ExecutionStarted(execution=e) | ExecutionUpdated(execution=e) | ExecutionFinished(execution=e):
                await self._push("execution", execution_row(e))
            case StepAdded(step=s) | StepStarted(step=s) | StepUpdated(step=s) | StepFinished(step=s):
                await self._push("step", step_row(s))
            case ArtifactAdded(artifact=artifact):
                await self._push("artifact", artifact_row(artifact))
            case ArtifactDeleted(artifact_id=artifact_id):
                await self._push("artifact deletion", {"id": artifact_id})
            case ExecutionDeleted(id=execution_id):
                await self._push("execution deletion", {"id": execution_id})
            case _:
                pass  # Notice, LinesDropped: for people watching, not kept

    async def _push(self, kind: str, item: Any) -> None:
        if kind is not self._kind:
            await self._flush()
            self._kind = kind
        self._pending.append(item)

    async def _flush(self) -> None:
        kind, pending = self._kind, self._pending
        self._kind, self._pending = None, []
        if not pending:
            return
        if kind == _LINES:
            await self._insert_lines(pending)
            return
        assert kind is not None
        changed = await self._execute(kind, pending)
        if kind in _GUARDED and changed < len(pending):
            log.debug("%d %s snapshot(s) not applied: the stored status had moved past them",
                      len(pending) - changed, kind)
        if kind == "execution deletion":
            # the keys of deleted rows may be given out again
            self._execution_pks.clear()
            self._step_pks.clear()

    async def _execute(self, kind: str, rows: list[dict[str, Any]]) -> int:
        stmt = STATEMENTS[kind]
        try:
            return (await self._conn.execute(stmt, rows)).rowcount
        except IntegrityError:
            pass
        # Some row was refused. SQLite undid only that statement, the transaction goes on; the rows
        # before it were written, and writing them again is harmless (same snapshot, same delete).
        changed = 0
        for row in rows:
            try:
                changed += (await self._conn.execute(stmt, row)).rowcount
            except IntegrityError as exc:
                log.warning("skipped writing the %s of %s: %s", kind, row["id"], exc.orig)
        return changed

    async def _insert_lines(self, events: list[LinesLogged]) -> None:
        await self._resolve(executions, {e.exec_id for e in events}, self._execution_pks)
        await self._resolve(steps, {e.step_id for e in events if e.step_id is not None}, self._step_pks)
        known = [e for e in events if e.exec_id in self._execution_pks]
        if len(known) < len(events):
            lost = {e.exec_id for e in events} - self._execution_pks.keys()
            log.warning("dropped %d log line(s) of unknown execution(s) %s",
                        sum(len(e.lines) for e in events if e.exec_id in lost), ", ".join(sorted(lost)))
        missing_steps = {e.step_id for e in known if e.step_id is not None} - self._step_pks.keys()
        if missing_steps:
            log.warning("log lines of unknown step(s) %s are kept without their step", ", ".join(sorted(missing_steps)))
        expected = sum(len(e.lines) for e in known)
        if not expected:
            return
        rows = chain.from_iterable(self._line_rows(e) for e in known)
        # Down to the driver: aiosqlite runs executemany in its thread, consuming the generator there,
        # so no list of rows is built and SQLite does the work with the GIL released.
        cursor = await (await driver_connection(self._conn)).executemany(INSERT_LINES, rows)
        inserted = cursor.rowcount
        await cursor.close()
        self.lines_written += inserted
        if inserted < expected:
            log.warning("%d log line(s) repeated a (execution, seq) already stored and were ignored",
                        expected - inserted)

    def _line_rows(self, e: LinesLogged) -> Iterator[tuple[Any, ...]]:
        ts = e.timestamp.timestamp() if e.timestamp.tzinfo else e.timestamp.replace(tzinfo=UTC).timestamp()
        step_pk = None if e.step_id is None else self._step_pks.get(e.step_id)
        return zip(
            repeat(self._execution_pks[e.exec_id]), count(e.start_seq), repeat(step_pk),
            repeat(e.stream.value), repeat(ts), e.lines, strict=False,
        )

    async def _resolve(self, table: Table, ids: set[str], cache: dict[str, int]) -> None:
        wanted = [i for i in ids if i not in cache]
        if wanted:
            result = await self._conn.execute(select(table.c.id, table.c.pk).where(table.c.id.in_(wanted)))
            cache.update(result.tuples().all())


def parents_first(created: Sequence[Step]) -> list[Step]:
    """By index, but each step after its parent (the foreign key on parent_id is checked per row)."""
    waiting = sorted(created, key=lambda s: s.index)
    ids = {s.id for s in waiting}
    placed: set[str] = set()
    ordered: list[Step] = []
    while waiting:
        rest = []
        for step in waiting:
            if step.parent_id is None or step.parent_id in placed or step.parent_id not in ids:
                ordered.append(step)
                placed.add(step.id)
            else:
                rest.append(step)
        if len(rest) == len(waiting):  # a cycle: let the database refuse those rows
            ordered.extend(rest)
            break
        waiting = rest
    return ordered


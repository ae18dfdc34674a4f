"""The write path: one batch of events becomes the statements of one transaction.

A batch holds thousands of events (log lines, and between them step and counter snapshots). Sent one
by one, each would cost a round trip to aiosqlite's thread; instead the batch is sorted into a few
`executemany` calls, one per table, in an order that keeps what matters:

1. execution snapshots, in the order they came;
2. step snapshots, in order (a new step's parent comes before it: the engine creates parents first);
3. artifact additions and deletions, in order;
4. log lines and their spans (storage.tables.log_spans: where each step's lines are); they need the
   execution and step rows above, for their integer keys;
5. execution deletions last: a deletion takes effect at the end of its batch, removing anything the
   batch wrote for that execution too.
Order matters only among the snapshots of one row, and that order is kept.

Snapshots are upserts guarded by the transition tables: the row changes only when the stored status
may move to the snapshot's status (or is the same), so a late `ExecutionUpdated` carrying "running"
never resurrects a finished execution. The guard is one SQL expression for every row (the allowed
(from, to) pairs written out), which is what lets all of a table's snapshots go in one
`executemany`. A snapshot followed in the same batch by one of the same row and status is dropped:
whatever the guard decides, the later one gets the same decision and overwrites every field. A
step added in the batch (StepAdded: a marker step, which no stored row can hold yet) keeps only its
latest snapshot whatever its status: a step that starts and ends within a batch is one insert.

A row the database refuses (a step of an unknown execution, say) is skipped and its execution named
in `BatchWriter.refused`; it does not fail the batch, whose other rows are good. The store writer
fails the executions named there (engine.store_writer).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC
from enum import StrEnum
from itertools import chain, count, groupby, repeat
from operator import itemgetter
from typing import Any, Generic, TypeVar

from sqlalchemy import Table, bindparam, delete, select, text
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
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
from engine.execution.transitions import EXECUTION_TRANSITIONS, STEP_TRANSITIONS
from engine.model import Step
from engine.surrogates import replace_surrogates
from storage.async_engine import AsyncConnection
from storage.driver import driver_connection
from storage.rows import STEPS, artifact_row, execution_row
from storage.tables import MAX_SPAN_LINES, artifacts, executions, steps

log = logging.getLogger(__name__)

S = TypeVar("S", bound=StrEnum)

#: Log lines, one row per line. The general way, and the one for lines SQLite's JSON cannot carry.
#: OR IGNORE: a repeated (execution, seq) is an engine bug, but failing the statement would fail
#: the whole batch and, after the writer's retries, lose it.
INSERT_LINES = (
    "INSERT OR IGNORE INTO log_lines (execution_pk, seq, step_pk, stream, ts, text) VALUES (?, ?, ?, ?, ?, ?)"
)
#: Log lines, one row per LinesLogged event: its lines as a JSON array that SQLite unpacks. Same rows
#: as INSERT_LINES, but the per-line work happens inside SQLite, without Python's GIL: with per-line
#: rows the writer thread takes the GIL back after every line, and while the engine's thread is busy
#: each of those waits, which halved the throughput end to end.
INSERT_LINES_JSON = (
    "INSERT OR IGNORE INTO log_lines (execution_pk, seq, step_pk, stream, ts, text) "
    "SELECT ?1, ?2 + key, ?3, ?4, ?5, value FROM json_each(?6)"
)
#: Where each step's lines are (storage.tables.log_spans). OR IGNORE as for the lines.
INSERT_SPANS = "INSERT OR IGNORE INTO log_spans (execution_pk, first_seq, step_pk, lines) VALUES (?, ?, ?, ?)"
#: SQLite's JSON text ends at an escaped NUL ("\\u0000"): such events take the per-line statement
_JSON_NUL = "\\u0000"

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


def _positional(stmt: Any, columns: Sequence[str]) -> str:
    """The statement's SQL for the driver's executemany of tuples in the order of `columns`."""
    compiled = stmt.compile(dialect=sqlite_dialect(paramstyle="qmark"), column_keys=list(columns))
    if tuple(compiled.positiontup or ()) != tuple(columns):
        raise RuntimeError(f"{compiled.positiontup} are not the columns {columns}")
    return str(compiled)


#: the step upsert under SQLAlchemy, with rows of storage.rows.STEPS.values: a command printing
#: markers makes thousands of steps a second, and SQLAlchemy's work per row cost more than SQLite's
STEP_UPSERT = _positional(STATEMENTS["step"], STEPS.columns)
#: rows whose misses are expected (a snapshot older than the stored status) and only logged
_GUARDED = frozenset({"execution", "step"})
#: ids per `IN (...)`, well under SQLite's limit on bound parameters
_IN_CHUNK = 5_000


R = TypeVar("R")


class _Snapshots(Generic[R]):
    """Snapshots of one table's rows in arrival order. A snapshot replaces the row's previous one
    in place when the status is the same (see the module's docstring), or when that row is new in
    this batch (a StepAdded: no stored row, so its insert may as well carry the latest snapshot:
    the engine moved it there through the transition table). Rows are made at the end, of the
    snapshots kept only."""

    __slots__ = ("_kept", "_latest", "_to_row")

    def __init__(self, to_row: Callable[[Any], R]) -> None:
        self._kept: list[Any] = []
        #: id -> (index in _kept, the row is new in this batch)
        self._latest: dict[str, tuple[int, bool]] = {}
        self._to_row = to_row

    def add(self, snapshot: Any, *, new: bool = False) -> None:
        at = self._latest.get(snapshot.id)
        if at is not None:
            index, was_new = at
            if was_new or self._kept[index].status is snapshot.status:
                self._kept[index] = snapshot
                return
        self._latest[snapshot.id] = (len(self._kept), new)
        self._kept.append(snapshot)

    @property
    def rows(self) -> list[R]:
        return list(map(self._to_row, self._kept))


class BatchWriter:
    """Sorts a batch of events into the statements of the caller's transaction on `conn`."""

    def __init__(self, conn: AsyncConnection, *, json_lines: bool = True) -> None:
        self._conn = conn
        #: SQLite has json_each (3.38+, or built with JSON1): lines go as one row per event
        self._json = json_lines
        self._executions = _Snapshots(execution_row)
        self._steps = _Snapshots(STEPS.values)
        self._artifacts: list[tuple[str, dict[str, Any]]] = []
        self._lines: list[LinesLogged] = []
        self._deleted: list[dict[str, Any]] = []
        self.lines_written = 0
        #: executions some of whose rows the database refused, and its words for the first refusal
        self.refused: dict[str, str] = {}

    async def write(self, events: Iterable[Event]) -> None:
        for event in events:
            self._add(event)
        await self._execute("execution", self._executions.rows)
        await self._execute_steps(self._steps.rows)
        for kind, group in groupby(self._artifacts, key=itemgetter(0)):
            await self._execute(kind, [row for _kind, row in group])
        await self._insert_lines(self._lines)
        await self._execute("execution deletion", self._deleted)

    def _add(self, event: Event) -> None:
        match event:
            case LinesLogged():
                self._lines.append(event)
            case ExecutionCreated(execution=execution, steps=created):
                self._executions.add(execution)
                for step in parents_first(created):
                    self._steps.add(step)
            case StepAdded(step=s):
                self._steps.add(s, new=True)
            case ExecutionStarted(execution=e) | ExecutionUpdated(execution=e) | ExecutionFinished(execution=e):
                self._executions.add(e)
            case StepStarted(step=s) | StepUpdated(step=s) | StepFinished(step=s):
                self._steps.add(s)
            case ArtifactAdded(artifact=artifact):
                self._artifacts.append(("artifact", artifact_row(artifact)))
            case ArtifactDeleted(artifact_id=artifact_id):
                self._artifacts.append(("artifact deletion", {"id": artifact_id}))
            case ExecutionDeleted(id=execution_id):
                self._deleted.append({"id": execution_id})
            case _:
                pass  # Notice, LinesDropped: for people watching, not kept

    async def _execute(self, kind: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        stmt = STATEMENTS[kind]
        try:
            changed = (await self._conn.execute(stmt, rows)).rowcount
        except IntegrityError:
            changed = await self._one_by_one(kind, rows)
        if kind in _GUARDED and changed < len(rows):
            log.debug("%d %s snapshot(s) not applied: the stored status had moved past them",
                      len(rows) - changed, kind)

    async def _execute_steps(self, rows: list[tuple[Any, ...]]) -> None:
        """As `_execute` for the steps, through the driver (see STEP_UPSERT)."""
        if not rows:
            return
        db = await driver_connection(self._conn)
        try:
            cursor = await db.executemany(STEP_UPSERT, rows)
            changed = cursor.rowcount
            await cursor.close()
        except sqlite3.IntegrityError:
            # as `_one_by_one`: the rows before the refused one are in, and go again harmlessly
            changed = 0
            for row in rows:
                try:
                    cursor = await db.execute(STEP_UPSERT, row)
                except sqlite3.IntegrityError as exc:
                    log.debug("skipped writing the step of %s: %s", row[0], exc)
                    self.refused.setdefault(row[1], str(exc))
                    continue
                changed += cursor.rowcount
                await cursor.close()
        if changed < len(rows):
            log.debug("%d step snapshot(s) not applied: the stored status had moved past them", len(rows) - changed)

    async def _one_by_one(self, kind: str, rows: list[dict[str, Any]]) -> int:
        # Some row was refused. SQLite undid only that statement, the transaction goes on; the rows
        # before it were written, and writing them again in order leaves the same result (a guarded
        # snapshot of a row that moved on is refused again, a deleted row is already gone).
        changed = 0
        for row in rows:
            try:
                changed += (await self._conn.execute(STATEMENTS[kind], row)).rowcount
            except IntegrityError as exc:
                log.debug("skipped writing the %s of %s: %s", kind, row["id"], exc.orig)
                if kind != "execution deletion":
                    self.refused.setdefault(row["id"] if kind == "execution" else row["execution_id"],
                                            str(exc.orig))
        return changed

    async def _insert_lines(self, events: list[LinesLogged]) -> None:
        if not events:
            return
        execution_pks = await self._keys(executions, {e.exec_id for e in events})
        step_pks = await self._keys(steps, {e.step_id for e in events if e.step_id is not None})
        known = [_LineBlock(e, execution_pks, step_pks) for e in events if e.exec_id in execution_pks]
        if len(known) < len(events):
            lost = {e.exec_id for e in events} - execution_pks.keys()
            log.warning("dropped %d log line(s) of unknown execution(s) %s",
                        sum(len(e.lines) for e in events if e.exec_id in lost), ", ".join(sorted(lost)))
            for execution_id in lost:
                self.refused.setdefault(execution_id, "its execution is not in the store")
        missing_steps = {e.step_id for e in events if e.step_id is not None} - step_pks.keys()
        if missing_steps:
            log.warning("log lines of unknown step(s) %s are kept without their step", ", ".join(sorted(missing_steps)))
        if not known:
            return
        db = await driver_connection(self._conn)
        cursor = await db.executemany(INSERT_SPANS, spans_of(known))
        await cursor.close()
        try:
            inserted = await self._send_lines(known, clean=False)
        except UnicodeEncodeError:
            # A line held a lone surrogate (a file name decoded with surrogateescape, say), which
            # UTF-8 cannot encode. The lines before it are in; OR IGNORE makes sending all again safe.
            log.warning("log lines with characters UTF-8 cannot encode were stored with U+FFFD in their place")
            await self._send_lines(known, clean=True)
            return
        expected = sum(len(block.lines) for block in known)
        if inserted < expected:
            log.warning("%d log line(s) repeated a (execution, seq) already stored and were ignored",
                        expected - inserted)

    async def _send_lines(self, blocks: list[_LineBlock], *, clean: bool) -> int:
        """Rows are made in aiosqlite's thread as executemany consumes the generators: no list of
        rows, and nothing of the per-line work in the event loop's thread."""
        db = await driver_connection(self._conn)
        inserted = 0
        per_line: list[_LineBlock] = []
        if self._json:
            docs = (block.json_row(clean, per_line) for block in blocks)
            cursor = await db.executemany(INSERT_LINES_JSON, (doc for doc in docs if doc is not None))
            inserted += cursor.rowcount
            await cursor.close()
        else:
            per_line = blocks
        if per_line:
            rows = chain.from_iterable(block.rows(clean) for block in per_line)
            cursor = await db.executemany(INSERT_LINES, rows)
            inserted += cursor.rowcount
            await cursor.close()
        self.lines_written += inserted
        return inserted

    async def _keys(self, table: Table, ids: set[str]) -> dict[str, int]:
        """id -> integer key of the rows that exist."""
        keys: dict[str, int] = {}
        wanted = sorted(ids)
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start:start + _IN_CHUNK]
            result = await self._conn.execute(select(table.c.id, table.c.pk).where(table.c.id.in_(chunk)))
            keys.update(result.all())
        return keys


class _LineBlock:
    """The rows of one LinesLogged event, made as they are consumed."""

    __slots__ = ("head", "lines", "start")

    def __init__(self, e: LinesLogged, execution_pks: dict[str, int], step_pks: dict[str, int]) -> None:
        ts = e.timestamp if e.timestamp.tzinfo else e.timestamp.replace(tzinfo=UTC)
        step_pk = None if e.step_id is None else step_pks.get(e.step_id)
        self.head = (execution_pks[e.exec_id], step_pk, e.stream.value, ts.timestamp())
        self.start = e.start_seq
        self.lines = e.lines

    def json_row(self, clean: bool, per_line: list[_LineBlock]) -> tuple[Any, ...] | None:
        """The row for INSERT_LINES_JSON, or None after putting the block in `per_line`."""
        doc = json.dumps(_clean(self.lines) if clean else self.lines, ensure_ascii=False)
        if _JSON_NUL in doc:
            per_line.append(self)
            return None
        execution_pk, step_pk, stream, ts = self.head
        return execution_pk, self.start, step_pk, stream, ts, doc

    def rows(self, clean: bool) -> Iterator[tuple[Any, ...]]:
        execution_pk, step_pk, stream, ts = self.head
        return zip(
            repeat(execution_pk), count(self.start), repeat(step_pk), repeat(stream), repeat(ts),
            _clean(self.lines) if clean else self.lines, strict=False,
        )


def spans_of(blocks: Iterable[_LineBlock]) -> list[tuple[int, int, int | None, int]]:
    """Rows of log_spans, `(execution_pk, first_seq, step_pk, lines)`: a block's lines, joined to
    the previous span of its execution when they continue it (same step, the next seq), in pieces of
    at most MAX_SPAN_LINES. Lines without a step have spans of step None."""
    spans: list[list[Any]] = []
    last: dict[int, list[Any]] = {}
    for block in blocks:
        execution_pk, step_pk = block.head[0], block.head[1]
        first, n = block.start, len(block.lines)
        span = last.get(execution_pk)
        if span is not None and span[2] == step_pk and span[1] + span[3] == first:
            joined = min(n, MAX_SPAN_LINES - span[3])
            span[3] += joined
            first += joined
            n -= joined
        while n > 0:
            span = [execution_pk, first, step_pk, min(n, MAX_SPAN_LINES)]
            spans.append(span)
            first += span[3]
            n -= span[3]
        if span is not None:
            last[execution_pk] = span
    return [(e, first, step, n) for e, first, step, n in spans]


def _clean(lines: Sequence[str]) -> list[str]:
    return [replace_surrogates(line) for line in lines]


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


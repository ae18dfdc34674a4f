"""The write path: one batch of events becomes the statements of one transaction.

A batch holds thousands of events (log lines, and between them step and counter snapshots). They are
sorted into rows on the event loop (`BatchWriter.add`), then written with plain sqlite3 in one call
to the write connection's thread (`BatchWriter.write`, storage.write_connection): a few statements
per table, in an order that keeps what matters:

1. execution snapshots, in the order they came;
2. step snapshots, in order (a new step's parent comes before it: the engine creates parents first);
3. artifact additions and deletions, in order;
4. log lines and their spans (storage.tables.log_spans: where each step's lines are); they need the
   execution and step rows above, for their integer keys;
5. execution deletions last: a deletion takes effect at the end of its batch, removing anything the
   batch wrote for that execution too.
Order matters only among the snapshots of one row, and that order is kept.

A table's rows go as a few statements of many rows each, `INSERT … VALUES (?, …), (?, …), …` with
the rows bound as parameters (storage.upserts.MultiRow): each statement is one call into SQLite,
which does the rows' work without Python's GIL. Calls are what count: each gives the GIL up and,
while the engine's thread is busy (a command printing markers), waits for it to come back; with
`executemany`, a call a row, the writer thread barely moved until the engine paused. Before, a
table's rows went as one JSON document per 500 rows that SQLite unpacked (json_each, `value ->> i`):
one call too, but SQLite's JSON work cost more than the binding that replaced it. Measured on the
real schema, 100,000 marker steps in transactions of 500 rows: the upsert 15-16 µs a row as JSON,
~8 µs as VALUES; lines in blocks of 3 (a marker pair), 5.2 µs a block as JSON, 3.2 µs as VALUES;
binding costs ~45 ns a parameter, under the GIL. `stepflow exec` printing 100,000 marker pairs: the
writer thread's CPU 2.8 s → 1.4-1.5 s, the whole 5.0-5.8 s → 4.6-4.7 s wall.

A statement takes at most SNAPSHOT_ROWS (LINE_ROWS) rows, fewer if SQLite binds fewer parameters
(SQLITE_LIMIT_VARIABLE_NUMBER); what is left goes in one statement of a multiple of an eighth of
that, filled up with its last row again (storage.upserts.MultiRow.padded: an upsert of the same
snapshot, or an INSERT OR IGNORE of the same key, changes nothing the second time), so a table has
a dozen texts or so, made once and found prepared in sqlite3's statement cache
(storage.write_connection). Each statement costs the writer thread a wait for the GIL when it
returns while the engine's thread is busy: the rest in powers of two made ~37 statements a batch of
markers (~1,600 steps), and the event loop waited for the writer ~0.65-0.8 s of 100,000 marker
pairs; filled up, ~25 statements and ~0.6 s. Lines
of a long block (LONG_BLOCK lines or more: a command printing plain output) bind the block's head
once and then a parameter a line (BLOCK_INSERTS): 1,000,000 lines in blocks of 1,000 cost ~530 ns
a line of CPU that way, ~590 as JSON, ~735 at six parameters a line. Bound parameters carry what
JSON could not (a NUL); a line with a lone surrogate, which UTF-8 cannot encode, is sent again with
U+FFFD in its place.

Snapshots are upserts guarded by the transition tables: the row changes only when the stored status
may move to the snapshot's status (or is the same), so a late `ExecutionUpdated` carrying "running"
never resurrects a finished execution. The guard is one SQL expression for every row (the allowed
(from, to) pairs written out), which is what lets all of a table's snapshots go in one statement;
SQLite applies a statement's rows in order, so two snapshots of a row in one statement apply as two
statements would. A snapshot followed in the same batch by one of the same row and status is dropped:
whatever the guard decides, the later one gets the same decision and overwrites every field. A
step added in the batch (StepAdded: a marker step, which no stored row can hold yet) keeps only its
latest snapshot whatever its status: a step that starts and ends within a batch is one insert.

A row the database refuses (a step of an unknown execution, say) is skipped and its execution named
in `BatchWriter.refused`; it does not fail the batch, whose other rows are good. The store writer
fails the executions named there (engine.store_writer).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from itertools import chain, groupby, islice
from json import loads
from operator import itemgetter
from typing import Any, Final, Generic, TypeVar

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
from engine.model import Step, Stream
from engine.surrogates import replace_surrogates
from storage.columns import MAX_SPAN_LINES
from storage.rows import ARTIFACTS, EXECUTIONS, STEPS
from storage.upserts import MultiRow, upsert_sql, values_sql

log = logging.getLogger(__name__)

S = TypeVar("S", bound=StrEnum)

#: rows per statement at most (storage.upserts.MultiRow): a batch of a command printing markers
#: (~1,650 steps, ~5,000 lines) is ~15 statements (~25 at 256 and 512 rows: the event loop waited
#: for the writer ~0.32 -> ~0.25 s of 100,000 marker pairs). The prepared statements of every size of
#: every table take a few MB (100,000 marker pairs' peak RSS +1.5 MB against 256 and 512 rows, which
#: the write connection's smaller page cache made room for: storage.pragmas); the step upsert of 256
#: rows took ~0.9 ms to prepare.
SNAPSHOT_ROWS = 512
#: log lines per statement at most: the same, for rows of 6 (or 4: RUN_INSERTS) values
LINE_ROWS = 1024

_LINE_COLUMNS = "log_lines (execution_pk, seq, step_pk, stream, ts, text)"
#: Log lines, rows of 6 values. OR IGNORE: a repeated (execution, seq) is an engine bug, but failing
#: the statement would fail the whole batch and, after the writer's retries, lose it.
LINE_INSERTS = MultiRow(6, LINE_ROWS, lambda rows: f"INSERT OR IGNORE INTO {_LINE_COLUMNS} {values_sql(6, rows)}")
#: The lines of one block (a LinesLogged event): the block's head bound once, then its lines, their
#: seq offsets written in the text. A long block's lines cost a parameter each instead of six.
BLOCK_INSERTS = MultiRow(1, LINE_ROWS, lambda rows: (
    f"INSERT OR IGNORE INTO {_LINE_COLUMNS} SELECT ?1, ?2 + column1, ?3, ?4, ?5, column2 FROM (VALUES "
    + ", ".join(f"({i}, ?{i + 6})" for i in range(rows)) + ")"))
#: Log lines of short blocks of one execution and stream (a batch of a command printing markers):
#: those two bound once, then rows of 4 values (seq, step_pk, ts, text); binding costs the writer's
#: thread GIL-held time by the parameter (the module's docstring)
RUN_INSERTS = MultiRow(4, LINE_ROWS, lambda rows: (
    f"INSERT OR IGNORE INTO {_LINE_COLUMNS} SELECT ?1, column1, column2, ?2, column3, column4 FROM "
    f"(VALUES {', '.join(['(?, ?, ?, ?)'] * rows)})"))
#: one row (the benches' raw sqlite3 baselines insert with it)
INSERT_LINES = LINE_INSERTS.sql(1)
#: blocks of at least this many lines go a statement (or a few) each, as BLOCK_INSERTS; shorter ones
#: together, as LINE_INSERTS
LONG_BLOCK = 32
#: Where each step's lines are (storage.tables.log_spans). OR IGNORE as for the lines.
SPAN_INSERTS = MultiRow(4, LINE_ROWS, lambda rows: "INSERT OR IGNORE INTO log_spans (execution_pk, first_seq, step_pk, "
                        f"lines) {values_sql(4, rows)}")


def guard_sql(table: str, transitions: Mapping[S, frozenset[S]]) -> str:
    """`excluded.status` may replace `<table>.status`: the same status, or an allowed transition."""
    pairs = sorted((src.value, to.value) for to, sources in transitions.items() for src in sources)
    allowed = ", ".join(f"('{src}', '{to}')" for src, to in pairs)
    return f"{table}.status = excluded.status OR ({table}.status, excluded.status) IN (VALUES {allowed})"


#: the step upsert as plain SQL, for rows of storage.rows.STEPS.values: a command printing markers
#: makes thousands of steps a second, and SQLAlchemy's work per row cost more than SQLite's
STEP_UPSERTS = MultiRow(len(STEPS.columns), SNAPSHOT_ROWS,
                        lambda rows: upsert_sql("steps", STEPS.columns, guard_sql("steps", STEP_TRANSITIONS), rows=rows))
STEP_UPSERT = STEP_UPSERTS.sql(1)
#: the same for the executions (rows of storage.rows.EXECUTIONS.values): an API creating a thousand
#: executions a second writes several snapshots of each
EXECUTION_UPSERTS = MultiRow(
    len(EXECUTIONS.columns), SNAPSHOT_ROWS,
    lambda rows: upsert_sql("executions", EXECUTIONS.columns, guard_sql("executions", EXECUTION_TRANSITIONS), rows=rows))
EXECUTION_UPSERT = EXECUTION_UPSERTS.sql(1)

#: the other statements a batch may hold, for rows of one value (the id) or of ARTIFACTS.values
RAW_STATEMENTS: dict[str, str] = {
    "artifact": upsert_sql("artifacts", ARTIFACTS.columns),
    "artifact deletion": "DELETE FROM artifacts WHERE id = ?",
    "execution deletion": "DELETE FROM executions WHERE id = ?",
}
#: where a row of each kind holds its execution's id (named when the row is refused)
_EXECUTION_ID_AT = {"execution": 0, "step": STEPS.columns.index("execution_id"),
                    "artifact": ARTIFACTS.columns.index("execution_id")}
#: rows whose misses are expected (a snapshot older than the stored status) and only logged
_GUARDED = frozenset({"execution", "step"})
#: ids per `IN (...)` at most (fewer where SQLite binds fewer parameters)
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
    """Sorts a batch of events into rows (`add`, on the event loop), then writes them with plain
    sqlite3 (`write`, on the write connection's thread, in the caller's transaction)."""

    def __init__(self, *, json_keys: bool = True) -> None:
        #: SQLite has its JSON functions (3.38+, or built with JSON1): the keys of the lines'
        #: executions and steps are looked up as one row (`_keys`)
        self._json = json_keys
        self._executions = _Snapshots(EXECUTIONS.values)
        self._steps = _Snapshots(STEPS.values)
        self._artifacts: list[tuple[str, tuple[Any, ...]]] = []
        self._lines: list[LinesLogged] = []
        self._deleted: list[tuple[str]] = []
        self._execution_rows: list[tuple[Any, ...]] = []
        self._step_rows: list[tuple[Any, ...]] = []
        self.lines_written = 0
        #: executions some of whose rows the database refused, and its words for the first refusal
        self.refused: dict[str, str] = {}

    def add(self, events: Iterable[Event]) -> None:
        """Sort the events into rows: on the event loop, whose thread made the events."""
        for event in events:
            self._add(event)
        self._execution_rows = self._executions.rows
        self._step_rows = self._steps.rows

    def write(self, db: sqlite3.Connection) -> None:
        """The rows' statements, in the order of the module's docstring. One call on the write
        connection's thread: a batch of a command printing markers holds hundreds of steps and
        line events, and a round trip between the threads for each statement (or a turn of a busy
        event loop for each) cost more than the rows."""
        if self._execution_rows:
            _upsert_rows(db, "execution", self._execution_rows, self.refused, EXECUTION_UPSERTS)
        if self._step_rows:
            _upsert_rows(db, "step", self._step_rows, self.refused, STEP_UPSERTS)
        for kind, group in groupby(self._artifacts, key=itemgetter(0)):
            _upsert_rows(db, kind, [row for _kind, row in group], self.refused)
        if self._lines:
            self.lines_written += _insert_lines(db, self._lines, self._json, self.refused)
        if self._deleted:
            _upsert_rows(db, "execution deletion", self._deleted, self.refused)

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
                self._artifacts.append(("artifact", ARTIFACTS.values(artifact)))
            case ArtifactDeleted(artifact_id=artifact_id):
                self._artifacts.append(("artifact deletion", (artifact_id,)))
            case ExecutionDeleted(id=execution_id):
                self._deleted.append((execution_id,))
            case _:
                pass  # Notice, LinesDropped: for people watching, not kept


def _many(db: sqlite3.Connection, statements: MultiRow, count: int, values: Iterator[Any],
          head: Sequence[Any] = ()) -> int:
    """`count` rows whose values come flat from `values`, a few statements of many rows each (see
    the module's docstring), each statement's parameters after those of `head`; the rows changed."""
    changed = 0
    width = statements.width
    for rows, size in statements.padded(count, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - len(head)):
        params = [*head, *islice(values, rows * width)]
        if size > rows:  # the last row again, to a size whose statement is prepared (MultiRow.padded)
            params += params[-width:] * (size - rows)
        changed += db.execute(statements.sql(size), params).rowcount
    return changed


def _upsert_rows(db: sqlite3.Connection, kind: str, rows: list[tuple[Any, ...]], refused: dict[str, str],
                 statements: MultiRow | None = None) -> None:
    """The rows, in a few statements (`_many`) when there are `statements` for them, else the
    statement of RAW_STATEMENTS[kind] for each. A row the database refuses is skipped and its
    execution named in `refused`: SQLite undid only the statement that failed, the transaction goes
    on; the rows before it were written, and writing them again in order leaves the same result (a
    guarded snapshot of a row that moved on is refused again, a deleted row is already gone)."""
    sql = RAW_STATEMENTS[kind] if statements is None else statements.sql(1)
    try:
        if statements is None or len(rows) < 2:
            changed = int(db.executemany(sql, rows).rowcount)
        else:
            changed = _many(db, statements, len(rows), chain.from_iterable(rows))
    except sqlite3.IntegrityError:
        changed = 0
        for row in rows:
            try:
                changed += db.execute(sql, row).rowcount
            except sqlite3.IntegrityError as exc:
                log.debug("skipped writing the %s of %s: %s", kind, row[0], exc)
                if kind != "execution deletion":
                    refused.setdefault(row[_EXECUTION_ID_AT[kind]], str(exc))
    if kind in _GUARDED and changed < len(rows):
        log.debug("%d %s snapshot(s) not applied: the stored status had moved past them", len(rows) - changed, kind)


def _insert_lines(db: sqlite3.Connection, events: list[LinesLogged], json: bool, refused: dict[str, str]) -> int:
    """The lines and their spans; returns how many lines were inserted."""
    execution_pks = _keys(db, "executions", {e.exec_id for e in events}, json)
    step_pks = _keys(db, "steps", {e.step_id for e in events if e.step_id is not None}, json)
    known = _blocks(events, execution_pks, step_pks)
    if len(known) < len(events):
        lost = {e.exec_id for e in events} - execution_pks.keys()
        log.warning("dropped %d log line(s) of unknown execution(s) %s",
                    sum(len(e.lines) for e in events if e.exec_id in lost), ", ".join(sorted(lost)))
        for execution_id in lost:
            refused.setdefault(execution_id, "its execution is not in the store")
    missing_steps = {e.step_id for e in events if e.step_id is not None} - step_pks.keys()
    if missing_steps:
        log.warning("log lines of unknown step(s) %s are kept without their step", ", ".join(sorted(missing_steps)))
    if not known:
        return 0
    spans = spans_of(known)
    _many(db, SPAN_INSERTS, len(spans), chain.from_iterable(spans))
    try:
        inserted = _send_lines(db, known, clean=False)
    except UnicodeEncodeError:
        # A line held a lone surrogate (a file name decoded with surrogateescape, say), which
        # UTF-8 cannot encode. The lines before it are in; OR IGNORE makes sending all again safe.
        log.warning("log lines with characters UTF-8 cannot encode were stored with U+FFFD in their place")
        return _send_lines(db, known, clean=True)
    expected = sum(len(block[_LINES]) for block in known)
    if inserted < expected:
        log.warning("%d log line(s) repeated a (execution, seq) already stored and were ignored",
                    expected - inserted)
    return inserted


#: a block of lines (a LinesLogged event of a known execution), made on the writer's thread, where
#: every µs a block holds the GIL the event loop waits (a batch of markers has ~1,650 blocks):
#: (execution_pk, step_pk, stream, ts, start_seq, lines)
_LineBlock = tuple[int, int | None, str, float, int, Sequence[str]]
_LINES: Final = 5
_STREAMS = {stream: stream.value for stream in Stream}


def _blocks(events: list[LinesLogged], execution_pks: dict[str, int], step_pks: dict[str, int]) -> list[_LineBlock]:
    """The blocks of the events whose execution is known. The events of one read of a command's
    output share one timestamp: it is converted once."""
    blocks: list[_LineBlock] = []
    append = blocks.append
    stamp: datetime | None = None
    ts = 0.0
    for e in events:
        execution_pk = execution_pks.get(e.exec_id)
        if execution_pk is None:
            continue
        if e.timestamp is not stamp:
            stamp = e.timestamp
            ts = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
        step_id = e.step_id
        append((execution_pk, None if step_id is None else step_pks.get(step_id), _STREAMS[e.stream], ts,
                e.start_seq, e.lines))
    return blocks


def _send_lines(db: sqlite3.Connection, blocks: list[_LineBlock], *, clean: bool) -> int:
    """The blocks' lines: runs of short blocks LINE_ROWS lines at a time in one statement, a long
    block in statements of its own (BLOCK_INSERTS)."""
    inserted = 0
    for long, run in groupby(blocks, key=lambda block: len(block[_LINES]) >= LONG_BLOCK):
        if long:
            inserted += sum(_insert_block(db, block, clean) for block in run)
        else:
            short = list(run)
            heads = {(block[0], block[2]) for block in short}
            if len(heads) == 1:
                values = _run_values(short, clean)
                inserted += _many(db, RUN_INSERTS, len(values) // RUN_INSERTS.width, iter(values), heads.pop())
            else:
                values = _line_values(short, clean)
                inserted += _many(db, LINE_INSERTS, len(values) // LINE_INSERTS.width, iter(values))
    return inserted


def _line_values(blocks: Iterable[_LineBlock], clean: bool) -> list[Any]:
    """The rows of short blocks' lines, flat: six values a line (a tuple a line, then one list, cost
    the writer's thread less than iterators chained over the blocks)."""
    values: list[Any] = []
    extend = values.extend
    for execution_pk, step_pk, stream, ts, start, lines in blocks:
        for seq, text in enumerate(_clean(lines) if clean else lines, start):
            extend((execution_pk, seq, step_pk, stream, ts, text))
    return values


def _run_values(blocks: Iterable[_LineBlock], clean: bool) -> list[Any]:
    """The same for blocks of one execution and stream (RUN_INSERTS): four values a line."""
    values: list[Any] = []
    extend = values.extend
    for _execution_pk, step_pk, _stream, ts, start, lines in blocks:
        for seq, text in enumerate(_clean(lines) if clean else lines, start):
            extend((seq, step_pk, ts, text))
    return values


def _insert_block(db: sqlite3.Connection, block: _LineBlock, clean: bool) -> int:
    execution_pk, step_pk, stream, ts, start, lines = block
    if clean:
        lines = _clean(lines)
    inserted = at = 0
    for rows in BLOCK_INSERTS.sizes(len(lines), db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 5):
        params = [execution_pk, start + at, step_pk, stream, ts, *lines[at:at + rows]]
        inserted += db.execute(BLOCK_INSERTS.sql(rows), params).rowcount
        at += rows
    return inserted


def _keys(db: sqlite3.Connection, table: str, ids: set[str], json: bool) -> dict[str, int]:
    """id -> integer key of the rows of `table` that exist. With SQLite's JSON functions, as one row
    (a JSON object): a row each would take the GIL back after each (the module's docstring)."""
    keys: dict[str, int] = {}
    wanted = sorted(ids)
    per = min(_IN_CHUNK, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    for start in range(0, len(wanted), per):
        chunk = wanted[start:start + per]
        where = f"FROM {table} WHERE id IN ({','.join('?' * len(chunk))})"  # noqa: S608
        if json:
            keys.update(loads(db.execute(f"SELECT json_group_object(id, pk) {where}", chunk).fetchone()[0]))
        else:
            keys.update(db.execute(f"SELECT id, pk {where}", chunk).fetchall())
    return keys


def spans_of(blocks: Iterable[_LineBlock]) -> list[tuple[int, int, int | None, int]]:
    """Rows of log_spans, `(execution_pk, first_seq, step_pk, lines)`: a block's lines, joined to
    the previous span of its execution when they continue it (same step, the next seq), in pieces of
    at most MAX_SPAN_LINES. Lines without a step have spans of step None."""
    spans: list[list[Any]] = []
    last: dict[int, list[Any]] = {}
    for execution_pk, step_pk, _stream, _ts, first, lines in blocks:
        n = len(lines)
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
    return spans  # type: ignore[return-value]  # lists of those four, bound as rows alike


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


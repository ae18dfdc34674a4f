"""The store's reads as plain SQL on a reader connection (`storage.reads`): each function runs on a
reader thread, whole, and returns domain objects.

The statements are fixed strings (sqlite3 keeps them prepared in its statement cache); filters only
pick among a few. Plans (EXPLAIN QUERY PLAN, 10,000 executions): the list walks
`ix_executions_created_at` backwards (or `ix_executions_status_created_at` / `..._user_created_at`
with a filter) and stops after offset + limit rows; its count uses a covering index.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Generator, Sequence
from datetime import UTC, datetime

from engine.model import (
    Artifact,
    ArtifactFilter,
    Execution,
    ExecutionFilter,
    ExecutionKind,
    ExecutionStatus,
    LogLine,
    Step,
    Stream,
)
from storage.columns import MAX_SPAN_LINES
from storage.rows import ARTIFACTS, EXECUTIONS, STEPS

_STREAMS = {s.value: s for s in Stream}
_EXECUTION_SELECT = f"SELECT {EXECUTIONS.select} FROM executions"
_STEP_SELECT = f"SELECT {STEPS.select} FROM steps"
_ARTIFACT_SELECT = f"SELECT {ARTIFACTS.select} FROM artifacts"
execution_from_values = EXECUTIONS.from_values
step_from_values = STEPS.from_values
artifact_from_values = ARTIFACTS.from_values
# as SQLAlchemy's `autoescape=True`
_ESCAPE = "/"


def _like_escape(text: str) -> str:
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")


# -- executions and steps ------------------------------------------------------------------------------
def list_executions(conn: sqlite3.Connection, flt: ExecutionFilter) -> tuple[list[Execution], int]:
    """Run in a snapshot: the page and the count agree."""
    where: list[str] = []
    params: list[object] = []
    if flt.status is not None:
        where.append("status = ?")
        params.append(ExecutionStatus(flt.status).value)
    if flt.user is not None:
        where.append('"user" = ?')
        params.append(flt.user)
    if flt.text:
        # ASCII case folding (SQLite's lower()); enough for names and commands
        where.append("(lower(name) LIKE lower(?) ESCAPE '/' OR lower(command) LIKE lower(?) ESCAPE '/')")
        pattern = f"%{_like_escape(flt.text)}%"
        params += (pattern, pattern)
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    limit, offset = max(flt.limit, 0), max(flt.offset, 0)
    rows = conn.execute(
        f"{_EXECUTION_SELECT}{cond} ORDER BY created_at DESC, pk DESC LIMIT ? OFFSET ?", (*params, limit, offset)
    ).fetchall()
    if offset == 0 and len(rows) < limit:
        total = len(rows)  # the whole of it is on this page
    else:
        total = conn.execute(f"SELECT count(*) FROM executions{cond}", params).fetchone()[0]
    return [execution_from_values(r) for r in rows], total


def get_execution(conn: sqlite3.Connection, execution_id: str) -> Execution | None:
    row = conn.execute(f"{_EXECUTION_SELECT} WHERE id = ?", (execution_id,)).fetchone()
    return None if row is None else execution_from_values(row)


def resolve_execution_id(conn: sqlite3.Connection, prefix: str, limit: int) -> list[str]:
    rows = conn.execute(
        "SELECT id FROM executions WHERE id LIKE ? ESCAPE '/' ORDER BY id LIMIT ?",
        (f"{_like_escape(prefix)}%", limit),
    ).fetchall()
    return [r[0] for r in rows]


def held_executions(conn: sqlite3.Connection) -> list[tuple[str, str | None]]:
    """(id, owner) of the executions an engine holds open: running, or pending once an engine
    admitted them (pending ones never admitted wait in the queue of whichever engine starts next;
    a job is held by a worker process, whose heartbeats decide: engine.jobs). Those whose owner is
    dead are lost (SqliteStore.mark_lost). Most of the time there are none."""
    return [(row[0], row[1]) for row in conn.execute(_HELD_SQL)]


_HELD_SQL = (f"SELECT id, owner FROM executions WHERE kind != '{ExecutionKind.JOB.value}' "
             f"AND (status = '{ExecutionStatus.RUNNING.value}' "
             f"OR (status = '{ExecutionStatus.PENDING.value}' AND admitted_at IS NOT NULL))")


def get_steps(conn: sqlite3.Connection, execution_id: str) -> list[Step]:
    rows = conn.execute(f"{_STEP_SELECT} WHERE execution_id = ? ORDER BY step_index, pk", (execution_id,)).fetchall()
    return [step_from_values(r) for r in rows]


# -- artifacts -----------------------------------------------------------------------------------------
def list_artifacts(conn: sqlite3.Connection, flt: ArtifactFilter) -> tuple[list[Artifact], int]:
    """Run in a snapshot: the page and the count agree."""
    where: list[str] = []
    params: list[object] = []
    if flt.execution_id is not None:
        where.append("execution_id = ?")
        params.append(flt.execution_id)
    if flt.step_id is not None:
        where.append("step_id = ?")
        params.append(flt.step_id)
    if flt.artifact_type is not None:
        where.append("artifact_type = ?")
        params.append(flt.artifact_type.value)
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    limit, offset = max(flt.limit, 0), max(flt.offset, 0)
    rows = conn.execute(
        f"{_ARTIFACT_SELECT}{cond} ORDER BY created_at, id LIMIT ? OFFSET ?", (*params, limit, offset)
    ).fetchall()
    if offset == 0 and len(rows) < limit:
        total = len(rows)
    else:
        total = conn.execute(f"SELECT count(*) FROM artifacts{cond}", params).fetchone()[0]
    return [artifact_from_values(r) for r in rows], total


def get_artifact(conn: sqlite3.Connection, artifact_id: str) -> Artifact | None:
    row = conn.execute(f"{_ARTIFACT_SELECT} WHERE id = ?", (artifact_id,)).fetchone()
    return None if row is None else artifact_from_values(row)


# -- log lines -----------------------------------------------------------------------------------------
def _line_keys(
    conn: sqlite3.Connection, execution_id: str, step_ids: Sequence[str] | None
) -> tuple[int, list[int] | None] | None:
    """The execution's pk and its steps' pks (None: no filter), or None when nothing can match."""
    row = conn.execute("SELECT pk FROM executions WHERE id = ?", (execution_id,)).fetchone()
    if row is None:
        return None
    if step_ids is None:
        return row[0], None
    ids = list(step_ids)
    step_pks = [r[0] for r in conn.execute(
        f"SELECT pk FROM steps WHERE execution_id = ? AND id IN ({', '.join('?' * len(ids))})",
        (execution_id, *ids),
    )] if ids else []
    if not step_pks:
        return None
    return row[0], sorted(step_pks)


#: a filter on at most this many steps merges one ordered scan of each step's spans
#: (MERGE (UNION ALL)); a wider one (SQLite allows 500 arms) walks the execution's spans in seq order
_MERGE_MAX_STEPS = 64


def get_log_lines(
    conn: sqlite3.Connection,
    execution_id: str,
    step_ids: Sequence[str] | None,
    after_seq: int,
    before_seq: int | None,
    limit: int | None,
    newest_first: bool,
    offset: int = 0,
) -> list[LogLine]:
    """Run in a snapshot. `offset` skips that many of the selected lines (in the order asked): the
    n-th line of a step's log in one read.

    Without a filter the primary key (execution_pk, seq) gives the lines in order. With one, the
    steps' spans (log_spans: runs of consecutive lines of one step) are read in seq order, an offset
    is skipped a span at a time, and only the lines of the page are read, by key range."""
    found = _line_keys(conn, execution_id, step_ids)
    if found is None:
        return []
    execution_pk, step_pks = found
    order = "DESC" if newest_first else "ASC"
    if step_pks is None:
        upper = before_seq is not None
        bound_params = (after_seq,) if before_seq is None else (after_seq, before_seq)
        page = (-1 if limit is None else limit, max(offset, 0))
        rows = conn.execute(
            "SELECT log_lines.seq, steps.id, log_lines.stream, log_lines.ts, log_lines.text "
            "FROM log_lines LEFT OUTER JOIN steps ON steps.pk = log_lines.step_pk "
            f"WHERE log_lines.execution_pk = ? AND log_lines.seq > ?{' AND log_lines.seq < ?' * upper} "
            f"ORDER BY log_lines.seq {order} LIMIT ? OFFSET ?",
            (execution_pk, *bound_params, *page),
        ).fetchall()
        return _log_lines(execution_id, rows)
    ids = dict(conn.execute(
        f"SELECT pk, id FROM steps WHERE pk IN ({', '.join('?' * len(step_pks))})", step_pks).fetchall())
    rows = []
    wanted = math.inf if limit is None else limit
    # the step's id comes from the span: rows come out in the shape _log_lines takes
    line_sql = ("SELECT seq, ?, stream, ts, text FROM log_lines WHERE execution_pk = ? AND seq >= ? AND seq < ? "
                f"ORDER BY seq {order}")
    ranges = _span_ranges(conn, execution_pk, step_pks, after_seq, before_seq, newest_first, max(offset, 0))
    for step_pk, low, high in ranges:
        if wanted <= 0:
            ranges.close()  # and with it the spans' statement
            break
        if newest_first:
            low = max(low, high - int(min(wanted, high - low)))
        else:
            high = min(high, low + int(min(wanted, high - low)))
        rows += conn.execute(line_sql, (ids.get(step_pk), execution_pk, low, high)).fetchall()
        wanted -= high - low
    return _log_lines(execution_id, rows)


def _span_ranges(
    conn: sqlite3.Connection,
    execution_pk: int,
    step_pks: list[int],
    after_seq: int,
    before_seq: int | None,
    newest_first: bool,
    offset: int,
) -> Generator[tuple[int, int, int], None, None]:
    """`(step_pk, low, high)`: the seqs low <= seq < high of the selected steps, in the order asked,
    within (after_seq, before_seq), after skipping `offset` lines. Spans are read lazily (a cursor),
    so a page near either end reads a few of them."""
    order = "DESC" if newest_first else "ASC"
    # a span starting up to MAX_SPAN_LINES - 1 before the bound may reach past it: an index range
    # on first_seq, and the test on where the span ends
    bounds = " AND first_seq > ? AND first_seq + lines > ?"
    params: tuple[int, ...] = (after_seq - MAX_SPAN_LINES, after_seq + 1)
    if before_seq is not None:
        bounds += " AND first_seq < ?"
        params += (before_seq,)
    if len(step_pks) <= _MERGE_MAX_STEPS:
        sql = " UNION ALL ".join(
            f"SELECT first_seq, lines, step_pk FROM log_spans WHERE execution_pk = ? AND step_pk = ?{bounds}"
            for _ in step_pks
        ) + f" ORDER BY 1 {order}"
        args: list[object] = []
        for step_pk in step_pks:
            args += [execution_pk, step_pk, *params]
    else:
        sql = (f"SELECT first_seq, lines, step_pk FROM log_spans WHERE execution_pk = ?{bounds} "
               f"AND step_pk IN ({', '.join('?' * len(step_pks))}) ORDER BY first_seq {order}")
        args = [execution_pk, *params, *step_pks]
    low_bound = after_seq + 1
    high_bound = math.inf if before_seq is None else before_seq
    # where the spans read so far reach: spans overlap only after a repeated seq (an engine bug,
    # whose lines the store ignored); the overlap counts once
    reached: float = -math.inf if not newest_first else math.inf
    for first, lines, step_pk in conn.execute(sql, args):
        low, high = max(first, low_bound), min(first + lines, high_bound)
        if newest_first:
            high = min(high, reached)
            reached = min(reached, low)
        else:
            low = max(low, reached)
            reached = max(reached, high)
        if high <= low:
            continue
        if offset:
            skipped = min(offset, high - low)
            offset -= skipped
            if newest_first:
                high -= skipped
            else:
                low += skipped
            if high <= low:
                continue
        yield step_pk, int(low), int(high)


def _log_lines(execution_id: str, rows: Sequence[tuple]) -> list[LogLine]:
    lines = []
    last_ts: float | None = None
    when = datetime.now(UTC)
    for seq, step_id, stream, ts, text in rows:
        if ts != last_ts:  # the lines of one event share a timestamp
            last_ts, when = ts, datetime.fromtimestamp(ts, UTC)
        lines.append(LogLine(execution_id, step_id, seq, _STREAMS[stream], when, text))
    return lines


def count_log_lines(conn: sqlite3.Connection, execution_id: str, step_ids: Sequence[str] | None) -> int:
    """Run in a snapshot."""
    found = _line_keys(conn, execution_id, step_ids)
    if found is None:
        return 0
    execution_pk, step_pks = found
    # a span's lines, all stored (a span is written with its lines, in their transaction); a repeated
    # seq (an engine bug, logged by the store) would count twice
    if step_pks is None:
        return conn.execute("SELECT coalesce(sum(lines), 0) FROM log_spans WHERE execution_pk = ?",
                            (execution_pk,)).fetchone()[0]
    return conn.execute(
        f"SELECT coalesce(sum(lines), 0) FROM log_spans WHERE execution_pk = ? "
        f"AND step_pk IN ({', '.join('?' * len(step_pks))})",
        (execution_pk, *step_pks),
    ).fetchone()[0]

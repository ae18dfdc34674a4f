"""The work queue (engine.store.queue) in SQLite: what `storage.queue.SqliteQueue` does, imported at its
first call (`stepflow exec` never makes one). Each operation one guarded statement returning the
row it changed (`UPDATE … RETURNING`), inside a BEGIN IMMEDIATE transaction.

A claim is procrastinate's fetch in SQLite's shape: `UPDATE … WHERE pk = (SELECT … ORDER BY
priority DESC, pk LIMIT 1) AND status = 'pending'`. SQLite has no SKIP LOCKED and needs none: the
write lock, taken at BEGIN IMMEDIATE, makes the select and the update one step no other writer (in
this process or another) can come between, so no item is handed out twice.

The statements of one item (and the claims of many at once: those of the claimers who asked
together, in one transaction) run inline on the event loop's thread (storage.inline_writes), each
committed before its caller is answered; the stale items' requeue, of any number, on a thread.

Every statement's guard names the (from, to) statuses it moves an item between; `_guard` checks them
against engine.store.queue.QUEUE_TRANSITIONS when this module loads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.model import new_id, utcnow
from engine.store.queue import (
    FINISHED,
    QueueCount,
    QueueFilter,
    QueueItem,
    QueueStatus,
    allowed,
)
from storage import columns
from storage.columns import to_iso
from storage.rows import RowMap, json_text

if TYPE_CHECKING:
    from storage.queue import SqliteQueue

QUEUE_ITEMS = RowMap(QueueItem, columns.QUEUE_ITEMS)

Q = QueueStatus


def _guard(to: QueueStatus, *sources: QueueStatus) -> str:
    """`status IN (...)` for a statement moving items from `sources` to `to`; each move must be in
    the table of transitions."""
    bad = [s for s in sources if not allowed(s, to)]
    if bad:
        raise RuntimeError(f"queue: {', '.join(bad)} -> {to} is not in QUEUE_TRANSITIONS")
    return f"status IN ({', '.join(repr(s.value) for s in sources)})"


_RETURNING = f"RETURNING {QUEUE_ITEMS.returning}"
_ENQUEUE = (f"INSERT INTO queue_items ({', '.join(QUEUE_ITEMS.columns)}) "
            f"VALUES ({', '.join('?' * len(QUEUE_ITEMS.columns))}) {_RETURNING}")
#: {queues}: the placeholders of the queues asked for
_CLAIM = (
    f"UPDATE queue_items SET status = '{Q.RUNNING}', worker = ?, attempt = attempt + 1, claimed_at = ?, "
    "heartbeat_at = ? "
    f"WHERE pk = (SELECT pk FROM queue_items WHERE queue IN ({{queues}}) AND status = '{Q.PENDING}' "
    "ORDER BY priority DESC, pk LIMIT 1) "
    f"AND {_guard(Q.RUNNING, Q.PENDING)} {_RETURNING}"
)
_HEARTBEAT = (
    "UPDATE queue_items SET heartbeat_at = ?, execution_id = coalesce(?, execution_id) "
    f"WHERE id = ? AND worker = ? AND status = '{Q.RUNNING}' {_RETURNING}"
)
_FINISH = (
    "UPDATE queue_items SET status = ?, result = ?, finished_at = ?, heartbeat_at = ? "
    f"WHERE id = ? AND worker = ? AND {' AND '.join(sorted({_guard(s, Q.RUNNING) for s in FINISHED}))} {_RETURNING}"
)
# the row whatever its status: the caller sees whether it was cancelled
_CANCELLABLE = _guard(Q.CANCELLED, Q.PENDING)
_CANCEL = (
    f"UPDATE queue_items SET status = CASE WHEN {_CANCELLABLE} THEN '{Q.CANCELLED}' ELSE status END, "
    f"finished_at = CASE WHEN {_CANCELLABLE} THEN ? ELSE finished_at END "
    f"WHERE id = ? {_RETURNING}"
)
_STALE_RESULT = '{"error": "no heartbeat from its worker"}'
# a stale item goes back to pending, or on its last attempt fails: both from running
_STALE = " AND ".join(sorted({_guard(Q.PENDING, Q.RUNNING), _guard(Q.FAILED, Q.RUNNING)}))
_REQUEUE_STALE = (
    "UPDATE queue_items SET "
    f"status = CASE WHEN attempt < max_attempts THEN '{Q.PENDING}' ELSE '{Q.FAILED}' END, "
    "finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE ? END, "
    "result = CASE WHEN attempt < max_attempts THEN result ELSE ? END "
    f"WHERE {_STALE} AND queue = ? AND heartbeat_at < ? "
    f"{_RETURNING}"
)


# -- SqliteQueue's methods (storage.queue), the store first ----------------------------------------
async def enqueue(
    store: SqliteQueue,
    queue: str,
    payload: Any = None,
    *,
    priority: int = 0,
    max_attempts: int = 1,
    labels: Mapping[str, str] | None = None,
    execution_id: str | None = None,
    item_id: str | None = None,
    created_at: datetime | None = None,
) -> QueueItem:
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    item = QueueItem(id=item_id or new_id(), queue=queue, payload=payload, priority=priority,
                     max_attempts=max_attempts, labels=dict(labels or {}), execution_id=execution_id,
                     created_at=created_at or utcnow())
    row = await _write_one(store, _ENQUEUE, QUEUE_ITEMS.values(item))
    assert row is not None
    return row


async def claim(store: SqliteQueue, queues: Sequence[str], worker: str) -> QueueItem | None:
    return (await store.claim_many(queues, [worker]))[0]


async def claim_many(store: SqliteQueue, queues: Sequence[str], workers: Sequence[str]) -> list[QueueItem | None]:
    names = list(queues)
    found: list[QueueItem | None] = [None] * len(workers)
    if not names or not workers:
        return found
    sql = _CLAIM.format(queues=", ".join("?" * len(names)))
    return await store._write_inline(_claim, sql, names, workers, to_iso(utcnow()))


async def heartbeat(store: SqliteQueue,
                    item_id: str, worker: str, *, execution_id: str | None = None) -> QueueItem | None:
    return await _write_one(store, _HEARTBEAT, (to_iso(utcnow()), execution_id, item_id, worker))


async def finish(store: SqliteQueue,
                 item_id: str, worker: str, status: QueueStatus, result: Any = None) -> QueueItem | None:
    status = QueueStatus(status)
    if status not in FINISHED:
        raise ValueError(f"an item is finished as one of {', '.join(sorted(FINISHED))}, not {status}")
    now = to_iso(utcnow())
    return await _write_one(store, _FINISH, (status.value, json_text(result), now, now, item_id, worker))


async def cancel_queued(store: SqliteQueue, item_id: str) -> QueueItem | None:
    return await _write_one(store, _CANCEL, (to_iso(utcnow()), item_id))


async def requeue_stale(store: SqliteQueue, queue: str, older_than: datetime) -> list[QueueItem]:
    params = (to_iso(utcnow()), _STALE_RESULT, queue, to_iso(older_than))
    return await store._write_batch(lambda conn: _requeue(conn, params))


async def get_queue_item(store: SqliteQueue, item_id: str) -> QueueItem | None:
    return await store._reader.run(_get, item_id, inline=True)


async def list_queue_items(store: SqliteQueue, flt: QueueFilter) -> tuple[list[QueueItem], int]:
    return await store._reader.run(_list, flt, snapshot=True, inline=True)


async def queue_counts(store: SqliteQueue) -> list[QueueCount]:
    return await store._reader.run(_counts)


async def queue_workers(store: SqliteQueue, queue: str, status: QueueStatus) -> dict[str, int]:
    return await store._reader.run(_workers, queue, QueueStatus(status).value)


async def _write_one(store: SqliteQueue, sql: str, params: Sequence[Any]) -> QueueItem | None:
    return await store._write_inline(_one, sql, tuple(params))


# -- writes of an item or a few, inline (storage.inline_writes) ------------------------------------------
def _one(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> QueueItem | None:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else QUEUE_ITEMS.from_values(row)


def _claim(conn: sqlite3.Connection, sql: str, queues: list[str], workers: Sequence[str],
           now: str) -> list[QueueItem | None]:
    found: list[QueueItem | None] = [None] * len(workers)
    for i, worker in enumerate(workers):
        row = conn.execute(sql, (worker, now, now, *queues)).fetchone()
        if row is None:
            break  # the queues are empty: so they are for the next ones
        found[i] = QUEUE_ITEMS.from_values(row)
    return found


def _requeue(conn: sqlite3.Connection, params: tuple[Any, ...]) -> list[QueueItem]:
    """Any number of items: on the write connection's thread (storage.write_connection)."""
    return [QUEUE_ITEMS.from_values(r) for r in conn.execute(_REQUEUE_STALE, params).fetchall()]


# -- reads, on a reader connection (storage.reads) ------------------------------------------------------
_SELECT = f"SELECT {QUEUE_ITEMS.select} FROM queue_items"


def _get(conn: sqlite3.Connection, item_id: str) -> QueueItem | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (item_id,)).fetchone()
    return None if row is None else QUEUE_ITEMS.from_values(row)


def _list(conn: sqlite3.Connection, flt: QueueFilter) -> tuple[list[QueueItem], int]:
    where: list[str] = []
    params: list[object] = []
    for column, value in (("queue", flt.queue), ("status", flt.status), ("worker", flt.worker)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(QueueStatus(value).value if column == "status" else value)
    if flt.priority is not None:
        where.append("priority = ?")
        params.append(flt.priority)
    for key, value in flt.labels:
        where.append("json_extract(labels, ?) = ?")
        params += [f'$."{key}"', value]
    cond = f" WHERE {' AND '.join(where)}" if where else ""
    limit, offset = max(flt.limit, 0), max(flt.offset, 0)
    rows = conn.execute(f"{_SELECT}{cond} ORDER BY pk DESC LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
    if offset == 0 and len(rows) < limit:
        total = len(rows)
    else:
        total = conn.execute(f"SELECT count(*) FROM queue_items{cond}", params).fetchone()[0]
    return [QUEUE_ITEMS.from_values(r) for r in rows], total


def _counts(conn: sqlite3.Connection) -> list[QueueCount]:
    rows = conn.execute(
        "SELECT queue, status, priority, count(*) FROM queue_items GROUP BY queue, status, priority "
        "ORDER BY queue, status, priority DESC"
    ).fetchall()
    return [QueueCount(queue, QueueStatus(status), priority, n) for queue, status, priority, n in rows]


def _workers(conn: sqlite3.Connection, queue: str, status: str) -> dict[str, int]:
    rows = conn.execute("SELECT worker, count(*) FROM queue_items WHERE queue = ? AND status = ? "
                        "AND worker IS NOT NULL GROUP BY worker", (queue, status)).fetchall()
    return dict(rows)

"""Writes of a few rows by an index, on the event loop's thread: the work queue's claims.

Through SQLAlchemy and aiosqlite a write transaction is a hop to a thread and back per statement
(BEGIN IMMEDIATE, each UPDATE, COMMIT): measured under bench/executr.py, those hops (and the loop
sitting idle while they ran) were most of a claim's cost, while SQLite itself answers a claim's
guarded UPDATE and its commit in tens of microseconds. As storage.reads does for small reads, a
transaction here runs inline, on a connection of its own:
  * the caller holds the process's write turn (`Connections._write_lock`): no writer of this
    process holds SQLite's write lock meanwhile;
  * BEGIN IMMEDIATE does not wait (busy_timeout 0): when another process writes the file, the
    transaction runs instead on a thread, waiting for the lock as every writer does;
  * this connection never checkpoints the WAL (wal_autocheckpoint 0), which can take milliseconds:
    the store's other connections do, at their commits.
A commit here is as durable as any of the store's (WAL, synchronous NORMAL): it survives the
process being killed the moment after.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from storage import pragmas

T = TypeVar("T")

#: milliseconds a transaction moved to a thread waits for another process's write lock (as the
#: store's pooled connections do: see storage.pragmas)
WAIT_MS = pragmas.BUSY_TIMEOUT_MS


class InlineWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        #: transactions that found the file locked by another process and ran on a thread
        self.moved = 0

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def optimize(self) -> None:
        """`PRAGMA optimize` on this connection, if it was opened: the statistics its statements
        found missing. A write lock another process holds fails it at once (busy_timeout 0)."""
        if self._conn is not None:
            self._conn.execute("PRAGMA optimize")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` in one write transaction, committed before this returns. The
        caller holds the process's write turn for the whole call."""
        conn = self._connection()
        try:
            return _transaction(conn, fn, args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        self.moved += 1
        moved = asyncio.ensure_future(asyncio.to_thread(_waiting, conn, fn, args))
        try:
            return await asyncio.shield(moved)
        except asyncio.CancelledError:
            # the thread has the connection (and the caller the write turn) until it is done
            await asyncio.wait([moved])
            raise

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = pragmas.connect(self.path, "PRAGMA busy_timeout=0", "PRAGMA wal_autocheckpoint=0",
                                   check_same_thread=False, cached_statements=64)
            self._conn = conn
        return conn


def _transaction(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    if conn.in_transaction:  # left open by a failure; never expected
        conn.execute("ROLLBACK")
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _waiting(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    conn.execute(f"PRAGMA busy_timeout={WAIT_MS}")
    try:
        return _transaction(conn, fn, args)
    finally:
        conn.execute("PRAGMA busy_timeout=0")

"""The connection the events' batches are written on: plain sqlite3, on a thread of its own.

A batch is one call to that thread: BEGIN IMMEDIATE, its statements, COMMIT (storage.writes). Under
SQLAlchemy's async engine the same transaction took a dozen round trips between the event loop and
aiosqlite's thread (check-out, BEGIN, the raw connection, each statement, COMMIT, the pool's reset),
and on a busy loop each of those waited for a whole turn of it: behind an API creating hundreds of
executions a second, a creation waited for its row ~5 such turns.

The other writes (a failure, the queue, the registry) keep SQLAlchemy; writes in this process take
turns on the store's write lock either way, and other processes' through SQLite's (BEGIN IMMEDIATE
under busy_timeout).

The WAL's checkpoints are not made in the writer's COMMIT (SQLite's wal_autocheckpoint, every 1,000
pages: ~25 ms every ~0.4 s of a burst of markers, the event loop waiting for the writer meanwhile) but
by storage.checkpoints on a thread and connection of their own, woken by the writer after a commit
that left enough of the WAL to copy back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from storage import pragmas
from storage.checkpoints import Checkpoints

T = TypeVar("T")


class WriteConnection:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        #: made with the connection, on the writer's thread (`_in_transaction`)
        self._checkpoints: Checkpoints | None = None

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` in one write transaction, committed when it returns, rolled back when
        it raises. A caller cancelled meanwhile does not stop it: it ends as it would have."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="stepflow-store-writer")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._in_transaction, fn)

    def _in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            conn = self._conn = _connect(self.path)
            self._checkpoints = Checkpoints.start(conn, self.path)
        if conn.in_transaction:  # left open by a failure of ROLLBACK itself; never expected
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        if self._checkpoints is not None:
            self._checkpoints.committed(conn)
        return result

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        await asyncio.get_running_loop().run_in_executor(thread, self._close)
        thread.shutdown(wait=False)

    def _close(self) -> None:
        checkpoints, self._checkpoints = self._checkpoints, None
        if checkpoints is not None:
            checkpoints.stop()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    # cached_statements: storage.writes' statements of many rows come in ~50 texts (a dozen sizes a
    # table, storage.upserts.MultiRow), each kept prepared: preparing one again cost up to ~1 ms
    return pragmas.connect(path, f"PRAGMA cache_size=-{pragmas.WRITER_CACHE_SIZE_KIB}", check_same_thread=False,
                           cached_statements=256)

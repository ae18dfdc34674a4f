"""The read path: plain SQL on SQLite connections kept for reading.

Through SQLAlchemy's async engine a read cost ~0.5-0.9 ms although SQLite answers in ~40 us: a pool
checkout, statement compilation and row processing, and one hop to aiosqlite's thread per `await`
(begin, execute, fetch, commit...). Here a whole read (its statements, one snapshot, and turning rows
into domain objects) is one function, run in one of two ways:
  * inline, on the event loop's thread, for reads of a few rows by an index (an execution, its
    steps, a page of the list): measured, the hop to a thread and back costs more than such a read
    (the list route served 2,200 req/s with a hop, 3,500 without). A progress handler bounds the
    stall: a statement still running after `INLINE_BUDGET` seconds (a count over a big filter, a far
    offset) is interrupted and the read runs again on a reader thread;
  * on a reader thread (one connection each): reads of many rows (log lines) and the ones that
    were too slow inline.
Every connection (WAL: reads go on while the store writes) has the store's pragmas and `query_only`,
so nothing here can write.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from storage import pragmas

T = TypeVar("T")

#: reader threads (and connections): reads overlap while one waits on the disk or the other runs
THREADS = 2
#: seconds an inline read may hold the event loop inside SQLite before it moves to a thread
INLINE_BUDGET = 0.002
#: SQLite virtual machine instructions between two looks at the clock
_PROGRESS_STEPS = 1000


class Reader:
    def __init__(self, path: Path, threads: int = THREADS) -> None:
        self.path = path
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._inline: sqlite3.Connection | None = None
        self._deadline = math.inf
        #: reads that ran out of their inline budget and moved to a thread (for tests and curiosity)
        self.moved = 0

    def open(self) -> None:
        self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="stepflow-read")

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.to_thread(executor.shutdown, wait=True)
        with self._lock:
            connections, self._connections = self._connections, []
        self._inline = None
        for conn in connections:
            conn.close()

    async def run(self, fn: Callable[..., T], *args: Any, snapshot: bool = False, inline: bool = False) -> T:
        """`fn(connection, *args)`, with `snapshot` inside one read transaction (its statements see
        one state of the database). `inline`: a read of a few rows, tried on this thread first."""
        if self._executor is None:
            raise RuntimeError("the store is not open")
        if inline:
            conn = self._inline_connection()
            try:
                return self._in_transaction(conn, fn, args, snapshot, budget=True)
            except sqlite3.OperationalError as exc:
                if str(exc) != "interrupted":
                    raise
                self.moved += 1
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn, args, snapshot)

    def data_version(self) -> int:
        """`PRAGMA data_version` of the inline connection: always that one, as the number is only
        comparable on one connection (it changes when another connection commits)."""
        if self._executor is None:
            raise RuntimeError("the store is not open")
        conn = self._inline_connection()
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def _inline_connection(self) -> sqlite3.Connection:
        conn = self._inline
        if conn is None:
            conn = self._inline = self._connect()
            conn.set_progress_handler(self._over_budget, _PROGRESS_STEPS)
        return conn

    def _over_budget(self) -> bool:
        return time.perf_counter() > self._deadline

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...], snapshot: bool) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return self._in_transaction(conn, fn, args, snapshot)

    def _in_transaction(self, conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...],
                        snapshot: bool, *, budget: bool = False) -> T:
        if conn.in_transaction:  # left open by a failure; never expected
            conn.execute("ROLLBACK")
        if snapshot:
            conn.execute("BEGIN")
        if budget:
            self._deadline = time.perf_counter() + INLINE_BUDGET
        try:
            return fn(conn, *args)
        finally:
            self._deadline = math.inf
            # ROLLBACK ends a read as COMMIT would, and also after a statement interrupted midway
            # (COMMIT would refuse: "SQL statements in progress")
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _connect(self) -> sqlite3.Connection:
        conn = pragmas.connect(self.path, "PRAGMA query_only=ON", check_same_thread=False, cached_statements=256)
        with self._lock:
            self._connections.append(conn)
        return conn

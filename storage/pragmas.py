"""Set-up every pooled SQLite connection gets: the pragmas, and transactions begun by us.

Python's sqlite3 module begins transactions implicitly, only before DML, and always DEFERRED. We
turn that off (`isolation_level = None`) and emit BEGIN from SQLAlchemy's "begin" event instead
(the recipe in SQLAlchemy's SQLite dialect docs), so that:
  * a read of several statements sees one snapshot (a deferred BEGIN), and
  * a write begins with BEGIN IMMEDIATE: it takes the write lock up front and waits for it under
    `busy_timeout`, instead of failing with SQLITE_BUSY when upgrading a read snapshot that another
    process's write made stale.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # SQLAlchemy is imported by who installs the listeners: the CLI's reads need none of it
    from sqlalchemy.engine import Connection, Engine

#: execution option of the connections that write (see `SqliteStore._writer`)
WRITE = "stepflow_write"

CACHE_SIZE_KIB = 16_384
#: the store writer's connection's own (storage.write_connection): it appends, and an append touches
#: the right edge of each b-tree and a few index pages; the reads, on other connections, keep theirs
WRITER_CACHE_SIZE_KIB = 2_048
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

#: bytes per page of a new file (SQLite's default is 4096); a file keeps the size it was made with.
#: Log lines are appended in runs of thousands: with 8 KiB pages a million of them insert in ~25%
#: less CPU time (fewer pages to split, fill and write to the WAL), and a tail is still a page or two.
PAGE_SIZE = 8192

#: how long a write waits for another connection's write lock before SQLITE_BUSY
BUSY_TIMEOUT_MS = 30_000

#: in order: busy_timeout first, so that switching to WAL waits for a lock instead of failing;
#: page_size before journal_mode, which writes the first page of a new file
PRAGMAS: tuple[tuple[str, str | int], ...] = (
    # SQLite's busy handler is not fair: with many processes writing (engines, claimers sharing one
    # file) on a loaded machine a writer could wait past 5 s and fail a write that would have gone
    # through; our transactions are short, so wait long rather than lose the write.
    ("busy_timeout", BUSY_TIMEOUT_MS),
    ("page_size", PAGE_SIZE),
    ("journal_mode", "WAL"),
    ("synchronous", "NORMAL"),
    ("foreign_keys", "ON"),
    # negative: KiB rather than pages; a per-connection upper bound, the cache grows as used
    ("cache_size", -CACHE_SIZE_KIB),
    ("temp_store", "MEMORY"),
    # the WAL file is truncated back to this size after a checkpoint instead of staying at its peak
    ("journal_size_limit", JOURNAL_SIZE_LIMIT),
    # ANALYZE (and PRAGMA optimize) sample this many rows per index instead of reading millions of
    # log lines; SQLite suggests a few hundred, the planner's choices for our indexes do not change
    ("analysis_limit", 1000),
)


def install(engine: Engine) -> None:
    """Listen on the (sync) engine behind an AsyncEngine: `install(async_engine.sync_engine)`."""
    from sqlalchemy import event

    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    apply(dbapi_connection)


def apply(dbapi_connection: Any) -> None:
    """The pragmas on one DB-API connection (pooled ones get them from `install`)."""
    cursor = dbapi_connection.cursor()
    try:
        for name, value in PRAGMAS:
            cursor.execute(f"PRAGMA {name}={value}")
            # journal_mode answers with the mode in effect; WAL can be refused (e.g. on some
            # network file systems) and then we would silently run without it
            if name == "journal_mode":
                mode = cursor.fetchone()[0]
                if str(mode).lower() != "wal":
                    raise RuntimeError(f"SQLite refused journal_mode=WAL (it is {mode!r})")
    finally:
        cursor.close()


def _on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


def connect(path: Path | str, *extra: str, **options: Any) -> sqlite3.Connection:
    """A plain sqlite3 connection on `path` with the pragmas, then the `extra` statements (a
    connection's own pragmas); closed again if any fails. isolation_level=None: no implicit
    transactions, ours are explicit. `options` go to sqlite3.connect (check_same_thread,
    cached_statements)."""
    conn = sqlite3.connect(path, isolation_level=None, **options)
    try:
        apply(conn)
        for statement in extra:
            conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn

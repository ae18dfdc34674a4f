"""The SQLite store's connections: opening the file (migrations, pragmas), the write transactions
and the reads every part of the store (storage.sqlite_store, storage.queue, storage.registry) uses.

Opening is plain sqlite3: one SELECT tells the file's schema revision (storage.schema); a new file
gets its schema with sqlite3 too (storage/schema.sql), and only an older one goes through SQLAlchemy
and Alembic to be brought to it. What `stepflow exec` does
(the engine's start-up, its executions' rows, the queue, the registry) is plain sqlite3 too: reads
on storage.reads' connections, the events' batches on storage.write_connection's, writes of a row or
a few inline (storage.inline_writes). Importing SQLAlchemy's Core alone costs ~0.2 s, the whole
start-up budget of `stepflow exec` (issue 16).

The rest (the store's figures, OpsConductor's writes: what `serve` and the TUI use) goes
through SQLAlchemy's async engine over aiosqlite, made at its first use (`_write`, `_read`):
connections from its pool (AsyncAdaptedQueuePool), each with its own thread; in WAL mode a read on
one connection goes on while another writes. Every connection gets the pragmas of `storage.pragmas`.
Writes in this process take turns on an asyncio lock (cheaper than SQLite's busy-wait), and begin
with BEGIN IMMEDIATE against writers in other processes.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import StoreFull
from storage import pragmas
from storage.inline_writes import InlineWriter
from storage.reads import Reader
from storage.schema import HEAD, bring_file_to_head, check_known, stored_revision
from storage.write_connection import WriteConnection

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

#: tries at opening the file while another process makes it (see `open`): ~1 s in all
_OPEN_ATTEMPTS = 10


class Connections:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._open = False
        #: SQLAlchemy's, made at the first `_write` or `_read` (`_async_engine`)
        self._engine: AsyncEngine | None = None
        self._writer: AsyncEngine | None = None
        self._write_lock = asyncio.Lock()
        self._json_keys = True
        self._reader = Reader(self.path)
        #: where the events' batches are written (`_write_batch`)
        self._batch_writer = WriteConnection(self.path)
        #: where the queue's one-item writes are made (`_write_inline`)
        self._inline = InlineWriter(self.path)

    async def open(self) -> None:
        """Create the file if needed, apply the migrations; every connection gets the pragmas."""
        if self._open:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                self._json_keys = await self._check_schema()
            except sqlite3.OperationalError as exc:
                # Two processes opening one new file at once: switching it to WAL needs an
                # exclusive lock, and SQLite answers "locked" at once instead of calling the busy
                # handler when waiting could deadlock. Opening again a moment later finds it in WAL.
                if "locked" not in str(exc) or attempt == _OPEN_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.02 * (attempt + 1))
                continue
            break
        self._open = True
        self._reader.open()

    async def _check_schema(self) -> bool:
        """Bring the file to this stepflow's schema (a SELECT when it is already there); whether its
        SQLite has the JSON functions."""
        conn = _connect(self.path)
        try:
            version = stored_revision(conn)
            if version != HEAD:
                check_known(version, self.path)
                # on a thread, the loop going on meanwhile: a new file's schema with sqlite3, an
                # older file's migrations through SQLAlchemy and Alembic
                await asyncio.to_thread(bring_file_to_head, self.path)
            return _has_json_functions(conn)
        finally:
            conn.close()

    async def close(self) -> None:
        async with self._write_lock:
            if not self._open:
                return
            self._open = False
            engine, self._engine, self._writer = self._engine, None, None
            await self._reader.close()
            await self._batch_writer.close()
            try:
                # SQLite's advice for long-lived connections: on closing, let it refresh the planner's
                # statistics it found missing (sampled, see analysis_limit in storage.pragmas), on
                # the connection of the sweep for lost executions and the inline writes
                self._inline.optimize()
            except sqlite3.OperationalError as exc:
                # another process writing the file (SQLite's "database is locked"), a full disk:
                # the statistics are refreshed at the next close, nothing is lost
                log.debug("PRAGMA optimize on closing the store was skipped: %s", exc)
            except Exception:
                log.warning("PRAGMA optimize on closing the store failed", exc_info=True)
            self._inline.close()
            if engine is not None:
                await engine.dispose()

    async def _async_engine(self) -> AsyncEngine:
        """SQLAlchemy's async engine on the file, made at the first call (the file is open: its
        schema is this stepflow's)."""
        if not self._open:
            raise RuntimeError("the store is not open")
        if self._engine is None:
            from sqlalchemy import URL
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(URL.create("sqlite+aiosqlite", database=str(self.path)))
            pragmas.install(engine.sync_engine)
            self._engine, self._writer = engine, engine.execution_options(**{pragmas.WRITE: True})
        return self._engine

    async def data_version(self) -> int:
        """SQLite's `PRAGMA data_version` on one reader connection, which never writes: it changes
        with every commit by this store's writer and by anyone else. ~4 µs, on the loop's thread."""
        return self._reader.data_version()

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (BEGIN IMMEDIATE) through SQLAlchemy, this process's writes taking
        turns."""
        await self._async_engine()
        writer = self._writer
        assert writer is not None
        from sqlalchemy.exc import DBAPIError

        try:
            async with self._write_lock, writer.begin() as conn:
                yield conn
        except (DBAPIError, sqlite3.Error, OSError) as exc:
            if _is_disk_full(exc):
                raise StoreFull(f"no space left for the store at {self.path}") from exc
            raise

    async def _write_batch(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` in one write transaction on plain sqlite3, as one call to the write
        connection's thread (storage.write_connection), this process's writes taking turns."""
        if not self._open:
            raise RuntimeError("the store is not open")
        return await self._turn(lambda: self._batch_writer.transaction(fn))

    async def _write_inline(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` in one write transaction of a few rows by an index, on this
        thread (storage.inline_writes), this process's writes taking turns."""
        if not self._open:
            raise RuntimeError("the store is not open")
        return await self._turn(lambda: self._inline.run(fn, *args))

    async def _turn(self, write: Callable[[], Awaitable[T]]) -> T:
        """`write()` in this process's turn on the write lock; a full disk as StoreFull."""
        try:
            async with self._write_lock:
                return await write()
        except (sqlite3.Error, OSError) as exc:
            if _is_disk_full(exc):
                raise StoreFull(f"no space left for the store at {self.path}") from exc
            raise

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """One read transaction (a deferred BEGIN) through SQLAlchemy: the statements in it see one
        snapshot."""
        engine = await self._async_engine()
        async with engine.connect() as conn:
            yield conn


def _is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL ("database or disk is full"), or ENOSPC from the file system, anywhere in the
    chain of causes (SQLAlchemy wraps sqlite3's errors)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, sqlite3.Error) and (
            (getattr(seen, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_FULL or "disk is full" in str(seen)
        ):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


def _connect(path: Path) -> sqlite3.Connection:
    return pragmas.connect(path)


def _has_json_functions(conn: sqlite3.Connection) -> bool:
    try:
        # json_group_object, which storage.writes looks up the keys of a batch's lines with
        conn.execute("SELECT json_group_object('a', 1)").fetchone()
    except sqlite3.OperationalError:
        log.info("this SQLite has no JSON functions: the keys of log lines are looked up a row at a time")
        return False
    return True

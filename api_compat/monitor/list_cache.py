"""A cache of `GET /api/executions` answers, valid exactly as long as the database has not changed.

The list is the route clients poll, and answering it from SQLite costs ~250 µs of CPU (the rows,
the count, the JSON); the same answer again costs nothing to keep. An entry holds the `data` JSON
of one query string and the database's `PRAGMA data_version` read *before* the rows were: SQLite
changes that number on every commit by any other connection, this process's store writer and
other processes alike (`stepflow run` beside `stepflow serve`). So an entry is served only while no
write has happened since its rows were read; a write that lands during the read makes the entry
look older than it is, never newer. The engine's events would not do: they reach subscribers
before the store writer commits them (and say nothing of other processes).

A page with a running execution is not kept: its `duration_seconds` grows with the clock.

The version is read on a connection of its own to the engine store's file (`engine.store.path`);
an engine without one (a test double) gets no cache. One `PRAGMA data_version` costs ~4 µs.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from aiohttp import web

from api_compat.monitor.keys import LIST_CACHE
from api_compat.state import ENGINE
from engine.model import Execution

log = logging.getLogger(__name__)

#: query strings remembered (the pages and filters clients poll are few)
MAX_ENTRIES = 64


class StoreVersion:
    """`PRAGMA data_version` of a SQLite file: a number that changes when anyone commits to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._broken = False

    def current(self) -> int | None:
        """None when the file cannot be asked (the caller then does without the cache)."""
        if self._broken:
            return None
        try:
            if self._conn is None:
                # autocommit: the pragma reads the WAL index and holds no read transaction open
                self._conn = sqlite3.connect(self.path, isolation_level=None)
                self._conn.execute("PRAGMA query_only = ON")
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            log.warning(
                "cannot read the data version of %s; listing without a cache", self.path, exc_info=True
            )
            self._broken = True
            self.close()
            return None

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class ListCache:
    def __init__(self, version: StoreVersion | None) -> None:
        self._version = version
        #: query string -> (data version, data JSON); insertion order is age
        self._entries: dict[str, tuple[int, str]] = {}
        self.hits = 0

    @classmethod
    def for_engine(cls, engine: object) -> ListCache:
        path = getattr(getattr(engine, "store", None), "path", None)
        return cls(StoreVersion(Path(path)) if path is not None else None)

    def lookup(self, key: str) -> tuple[str | None, int | None]:
        """(the cached data JSON or None, the version to `keep` a fresh answer under)."""
        if self._version is None:
            return None, None
        version = self._version.current()
        entry = self._entries.get(key)
        if entry is not None and entry[0] == version:
            self.hits += 1
            return entry[1], version
        return None, version

    def keep(self, key: str, version: int | None, data_json: str, executions: list[Execution]) -> None:
        if version is None or any(e.started_at is not None and e.completed_at is None for e in executions):
            return
        self._entries.pop(key, None)
        self._entries[key] = (version, data_json)
        if len(self._entries) > MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]

    def close(self) -> None:
        self._entries.clear()
        if self._version is not None:
            self._version.close()


def install(app: web.Application) -> None:
    """A cache for `app`'s engine, closed with the app."""
    cache = ListCache.for_engine(app[ENGINE])
    app[LIST_CACHE] = cache

    async def close(app: web.Application) -> None:
        cache.close()

    app.on_cleanup.append(close)

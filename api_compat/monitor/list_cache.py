"""A cache of `GET /api/executions` answers, valid exactly as long as the database has not changed.

The list is the route clients poll, and answering it from SQLite costs ~250 µs of CPU (the rows,
the count, the JSON); the same answer again costs nothing to keep. An entry holds the `data` JSON
of one query string and the store's `data_version()` read *before* the rows were: a number that
changes on every commit to the database, by this process's store writer and by other processes
alike (`stepflow run` beside `stepflow serve`). So an entry is served only while no write has
happened since its rows were read; a write that lands during the read makes the entry look older
than it is, never newer. The engine's events would not do: they reach subscribers before the store
writer commits them (and say nothing of other processes).

A page with a running execution is not kept: its `duration_seconds` grows with the clock.

The version comes from the engine's store (`engine.store`, an `engine.store.ChangeCounter`); an
engine without one (a remote client, a test double) gets no cache.
"""

from __future__ import annotations

import logging

from aiohttp import web

from api_compat.monitor.keys import LIST_CACHE
from api_compat.state import ENGINE
from engine.model import Execution
from engine.store import ChangeCounter

log = logging.getLogger(__name__)

#: query strings remembered (the pages and filters clients poll are few)
MAX_ENTRIES = 64


class ListCache:
    def __init__(self, version: ChangeCounter | None) -> None:
        self._version = version
        #: query string -> (data version, data JSON); insertion order is age
        self._entries: dict[str, tuple[int, str]] = {}
        self.hits = 0

    @classmethod
    def for_engine(cls, engine: object) -> ListCache:
        store = getattr(engine, "store", None)
        return cls(store if callable(getattr(store, "data_version", None)) else None)

    async def lookup(self, key: str) -> tuple[str | None, int | None]:
        """(the cached data JSON or None, the version to `keep` a fresh answer under)."""
        if self._version is None:
            return None, None
        try:
            version = await self._version.data_version()
        except Exception:
            log.warning("cannot read the store's data version; listing without a cache", exc_info=True)
            self.close()
            return None, None
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
        self._version = None


def install(app: web.Application) -> None:
    """A cache for `app`'s engine, closed with the app."""
    cache = ListCache.for_engine(app[ENGINE])
    app[LIST_CACHE] = cache

    async def close(app: web.Application) -> None:
        cache.close()

    app.on_cleanup.append(close)

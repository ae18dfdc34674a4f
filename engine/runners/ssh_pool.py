"""SSH connections shared by runners: one per (host, port, user) and event loop."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncssh

ConnectionKey = tuple[str, int | None, str | None]


@dataclass(eq=False)
class _Pooled:
    connecting: asyncio.Task[asyncssh.SSHClientConnection]
    users: weakref.WeakSet[object] = field(default_factory=weakref.WeakSet)


class SshConnectionPool:
    """Open SSH connections, one per (host, port, user) and event loop, shared by runners.

    A connection is closed when the last runner using it releases it (`SshRunner.close`).
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ConnectionKey, _Pooled]] = (
            weakref.WeakKeyDictionary()
        )

    def _entries(self) -> dict[ConnectionKey, _Pooled]:
        return self._by_loop.setdefault(asyncio.get_running_loop(), {})

    async def get(
        self,
        key: ConnectionKey,
        user: object,
        connect: Callable[[], Awaitable[asyncssh.SSHClientConnection]],
    ) -> asyncssh.SSHClientConnection:
        """The pooled connection for `key`, opened with `connect` when there is none (or it
        closed); `user` (a runner) holds it until `release`."""
        entries = self._entries()
        entry = entries.get(key)
        if entry is not None and entry.connecting.done():
            if entry.connecting.cancelled() or entry.connecting.exception() is not None:
                entry = None
            elif entry.connecting.result().is_closed():
                entry = None
        if entry is None:
            entry = _Pooled(asyncio.ensure_future(connect()))
            entries[key] = entry
        entry.users.add(user)
        try:
            return await asyncio.shield(entry.connecting)
        except BaseException:
            if entry.connecting.done() and entries.get(key) is entry:
                del entries[key]
            raise

    def discard(self, key: ConnectionKey, conn: asyncssh.SSHClientConnection) -> None:
        """Forget `conn` (found broken), so that the next `get` opens a new connection."""
        entries = self._entries()
        entry = entries.get(key)
        if entry is not None and entry.connecting.done() and not entry.connecting.cancelled():
            if entry.connecting.exception() is None and entry.connecting.result() is conn:
                del entries[key]
        conn.close()

    async def release(self, user: object) -> None:
        """`user` no longer needs its connections; close those nobody else uses."""
        entries = self._entries()
        closing: list[asyncssh.SSHClientConnection] = []
        for key, entry in list(entries.items()):
            if user not in entry.users:
                continue
            entry.users.discard(user)
            if len(entry.users) == 0:
                del entries[key]
                if not entry.connecting.done():
                    entry.connecting.cancel()
                    with contextlib.suppress(BaseException):
                        await entry.connecting
                elif not entry.connecting.cancelled() and entry.connecting.exception() is None:
                    closing.append(entry.connecting.result())
        for conn in closing:
            conn.close()
            await conn.wait_closed()


#: the pool runners share unless they are given one
DEFAULT_POOL = SshConnectionPool()

"""The OpsConductor tests' server and client: a real engine on a SQLite file with targets (asyncssh's
server on loopback under several names, and `local`), the real listener, and one client through
which every request goes with `Authorization: Bearer <token>` (a token of the data directory)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from api_compat import ApiListener, create_token
from engine.engine import Engine, EngineConfig
from engine.targets_file import parse_user_targets
from storage import SqliteStore
from storage.paths import database_path
from tests.api.conftest import make_config
from tests.servers import SshServer


def ssh_targets(server: SshServer, *names: str) -> dict[str, Any]:
    """Targets-file entries for `server` under each of `names`."""
    entry = {"type": "ssh", "host": server.host, "port": server.port, "user": server.user,
             "key": server.client_key, "known_hosts": server.known_hosts, "connect_timeout": 5}
    return {name: dict(entry) for name in names}


@dataclass
class Ops:
    """A client of one running listener: every call carries the bearer token."""

    url: str
    token: str
    session: aiohttp.ClientSession
    sockets: list[aiohttp.ClientWebSocketResponse] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**kwargs.pop("headers", {}), **self.headers}
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None)

    async def ws(self, path: str = "/ws/executions") -> Events:
        socket = await self.session.ws_connect(self.url + path, headers=self.headers)
        self.sockets.append(socket)
        return Events(socket)


@dataclass
class Events:
    """The messages of one `/ws/executions` socket, awaited with a timeout."""

    socket: aiohttp.ClientWebSocketResponse
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.socket.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"the socket ended: {msg}")
                event = json.loads(msg.data)
                self.seen.append(event)
                if done(event):
                    return event

    async def completed(self, execution_serial: str, timeout: float = 60) -> dict[str, Any]:
        return await self.until(lambda e: e["type"] == "execution_completed"
                                and e["data"]["execution_serial"] == execution_serial, timeout)


@contextlib.asynccontextmanager
async def ops_server(data_dir: Path, targets: dict[str, Any] | None = None, *,
                     max_running: int = 64, **config: Any) -> AsyncIterator[Ops]:
    """The engine (targets: a targets file's mapping) and the listener on `data_dir` (`config`:
    changes to its ApiConfig); stopped after."""
    parsed = parse_user_targets(json.dumps(targets or {}))
    engine = Engine(SqliteStore(database_path(data_dir)), data_dir,
                    EngineConfig(kill_grace=1.0, shutdown_grace=5, targets=dict(parsed), max_running=max_running))
    await engine.start()
    try:
        listener = ApiListener(engine, make_config(data_dir, **config))
        await listener.start()
        try:
            async with aiohttp.ClientSession() as session:
                ops = Ops(listener.url, create_token(data_dir), session)
                try:
                    yield ops
                finally:
                    for socket in ops.sockets:
                        await socket.close()
        finally:
            await listener.stop()
    finally:
        await engine.shutdown()

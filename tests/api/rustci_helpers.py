"""Helpers of the RustCI runner API tests: a real listener (auth on) over the real engine, ONE
client session that sends every request with `Authorization: Bearer <token>`, and the document's
Python SDK class as written (specs/rustci-runner-api.md, "SDK Examples")."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_compat import ApiListener, create_token
from tests.api.conftest import make_config, running

WAIT = 30.0


@dataclass
class RustciApi:
    """Every request of the tests goes through here (the bearer token is added to each)."""

    base: str
    token: str
    session: aiohttp.ClientSession
    #: the in-process engine and listener (None against a `stepflow serve` process)
    engine: Any = None
    listener: ApiListener | None = None
    #: a scratch directory of the test (gate files)
    tmp: Path = Path()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    @contextlib.asynccontextmanager
    async def stream(self, path: str, **headers: str) -> AsyncIterator[aiohttp.ClientResponse]:
        async with self.session.get(self.base + path, headers={**self.auth, **headers},
                                    timeout=aiohttp.ClientTimeout(total=None, sock_read=WAIT)) as resp:
            yield resp

    @contextlib.asynccontextmanager
    async def websocket(self, path: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        async with self.session.ws_connect(self.base.replace("http", "ws", 1) + path, headers=self.auth) as ws:
            yield ws

    async def register(self, name: str = "native-1", kind: str = "native", **extra: Any) -> str:
        status, body = await self.call("POST", "/api/runners/register", json={"name": name, "type": kind, **extra})
        assert status == 201, body
        return str(body["runner_id"])

    async def submit(self, runner_id: str, *steps: str, name: str = "job", **extra: Any) -> dict[str, Any]:
        body = {"name": name, "steps": [{"name": f"s{i}", "run": run} for i, run in enumerate(steps, 1)], **extra}
        status, answer = await self.call("POST", f"/api/runners/{runner_id}/jobs", json=body)
        assert status == 201, answer
        return dict(answer)

    async def finished(self, job: dict[str, Any]) -> Any:
        async with asyncio.timeout(WAIT):
            return await self.engine.wait(job["execution_id"])


@contextlib.asynccontextmanager
async def rustci_api(engine: Any, tmp_path: Path) -> AsyncIterator[RustciApi]:
    async with running(engine, make_config(tmp_path, auth_enabled=True)) as listener:
        async with aiohttp.ClientSession() as session:
            yield RustciApi(listener.url, create_token(tmp_path), session, engine, listener, tmp_path)


@pytest.fixture
async def rc(engine: Any, tmp_path: Path) -> AsyncIterator[RustciApi]:
    async with rustci_api(engine, tmp_path) as api:
        yield api


async def next_message(ws: aiohttp.ClientWebSocketResponse, kind: str, **match: Any) -> dict[str, Any]:
    """The next WebSocket message of type `kind` whose fields match."""
    async with asyncio.timeout(WAIT):
        while True:
            message = json.loads((await ws.receive()).data)
            if message.get("type") == kind and all(message.get(k) == v for k, v in match.items()):
                return dict(message)


# -- the document's Python SDK class, as written ---------------------------------------------------
import requests  # noqa: E402


class RustCIRunnerClient:
    def __init__(self, base_url, api_key=None):  # type: ignore[no-untyped-def]
        self.base_url = base_url
        self.headers = {'Content-Type': 'application/json'}
        if api_key:
            self.headers['X-API-Key'] = api_key

    def register_runner(self, runner_config):  # type: ignore[no-untyped-def]
        response = requests.post(
            f"{self.base_url}/api/runners/register",
            headers=self.headers,
            json=runner_config
        )
        return response.json()

    def get_runner_status(self, runner_id):  # type: ignore[no-untyped-def]
        response = requests.get(
            f"{self.base_url}/api/runners/{runner_id}/status",
            headers=self.headers
        )
        return response.json()

    def submit_job(self, runner_id, job_config):  # type: ignore[no-untyped-def]
        response = requests.post(
            f"{self.base_url}/api/runners/{runner_id}/jobs",
            headers=self.headers,
            json=job_config
        )
        return response.json()


def sdk_client(api: RustciApi) -> RustCIRunnerClient:
    """The document's client on this listener (only the base URL changed); the one helper adds the
    bearer token to its headers, as to every request of these tests."""
    client = RustCIRunnerClient(api.base)
    client.headers.update(api.auth)
    return client

"""API tests: a real listener on loopback (ports chosen by the OS), a real aiohttp client."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_compat import ApiConfig, ApiListener
from tests.api.scripted_engine import ScriptedEngine


def make_config(tmp_path: Path, **changes: Any) -> ApiConfig:
    return ApiConfig(host="127.0.0.1", port=0, ws_host="127.0.0.1", ws_port=0, data_dir=tmp_path,
                     shutdown_timeout=2.0).replace(**changes)


@contextlib.asynccontextmanager
async def running(engine: Any, config: ApiConfig) -> AsyncIterator[ApiListener]:
    listener = ApiListener(engine, config)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.stop()


@pytest.fixture
async def scripted(tmp_path: Path) -> ScriptedEngine:
    return ScriptedEngine(tmp_path)


@pytest.fixture
async def real_engine(tmp_path: Path) -> AsyncIterator[Any]:
    from tests.engine_helpers import engine_at

    async with engine_at(tmp_path / "data") as engine:
        yield engine


@pytest.fixture
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """The real engine on a SQLite file."""
    from tests.engine_helpers import engine_at

    async with engine_at(tmp_path / "data") as eng:
        yield eng


@pytest.fixture
async def listener(engine: Any, tmp_path: Path) -> AsyncIterator[ApiListener]:
    async with running(engine, make_config(tmp_path)) as lst:
        yield lst


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


Api = Callable[..., Any]


@pytest.fixture
def api(listener: ApiListener, session: aiohttp.ClientSession) -> Api:
    """`await api("GET", "/api/health")` -> (status, parsed JSON body)."""

    async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with session.request(method, listener.url + path, **kwargs) as resp:
            body = await resp.json(content_type=None)
            return resp.status, body

    return call

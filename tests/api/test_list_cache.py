"""`GET /api/executions` answers from its cache only while the database is unchanged: after a
create, a finish, a delete, or a write by another store on the same file, the next GET shows it.
A real engine on a real SQLite file, a real listener and client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_compat import ApiListener
from api_compat.monitor import schemas as s
from api_compat.monitor.keys import LIST_CACHE
from engine.events import ExecutionCreated, ExecutionStarted
from engine.model import Execution, new_id
from storage import SqliteStore
from tests.api.helpers import check_fail, check_ok
from tests.engine_helpers import submit_command

pytestmark = pytest.mark.timeout(60)


async def listed(api: Any, query: str = "") -> tuple[list[tuple[str, str]], int]:
    """(id, status) of each listed execution, newest first, and total_count."""
    data = check_ok(*await api("GET", "/api/executions" + query), s.ExecutionList)
    return [(e["id"], e["status"]) for e in data["executions"]], data["total_count"]


async def create(api: Any, command: str) -> str:
    status, body = await api("POST", "/api/executions", json={"command": command})
    return check_ok(status, body, expect=201)["execution_id"]


async def test_the_next_get_shows_every_change(
    api: Any, engine: Any, listener: ApiListener, tmp_path: Path
) -> None:
    cache = listener.app[LIST_CACHE]
    a = await create(api, "echo a")
    await engine.wait(a)
    assert await listed(api) == ([(a, "completed")], 1)
    hits = cache.hits
    status, body = await api("GET", "/api/executions")
    again = check_ok(status, body, s.ExecutionList)
    assert cache.hits == hits + 1  # unchanged: from the cache, the same answer with a timestamp of now
    assert [(e["id"], e["status"]) for e in again["executions"]] == [(a, "completed")]

    # created: the POST answers once the row is stored
    gate = tmp_path / "go"
    b = await create(api, f"until test -e {gate}; do sleep 0.02; done")
    rows, total = await listed(api)
    assert [i for i, _ in rows] == [b, a] and total == 2

    # finished
    gate.touch()
    await engine.wait(b)
    assert await listed(api) == ([(b, "completed"), (a, "completed")], 2)
    assert await listed(api, "?limit=1") == ([(b, "completed")], 2)

    # deleted
    check_ok(*await api("DELETE", f"/api/executions/{a}"))
    assert await listed(api) == ([(b, "completed")], 1)
    assert await listed(api, "?limit=1") == ([(b, "completed")], 1)

    # written by another store on the same file (another process's engine, `stepflow run`...)
    other = SqliteStore(engine.store.path)
    await other.open()
    try:
        c = Execution(id=new_id(), name="from elsewhere", command="true")
        await other.apply([ExecutionCreated(c)])
    finally:
        await other.close()
    assert await listed(api) == ([(c.id, "pending"), (b, "completed")], 2)


async def test_a_page_with_a_running_execution_is_read_every_time(
    api: Any, engine: Any, listener: ApiListener, tmp_path: Path
) -> None:
    """Its duration grows with the clock: never from the cache."""
    cache = listener.app[LIST_CACHE]
    gate = tmp_path / "go"
    events = engine.subscribe()
    ex = await create(api, f"until test -e {gate}; do sleep 0.02; done")
    async with asyncio.timeout(10):
        async for event in events:
            if isinstance(event, ExecutionStarted) and event.execution_id == ex:
                break
    events.close()
    await engine.writer.barrier()  # the store holds the start
    assert await listed(api) == ([(ex, "running")], 1)
    hits = cache.hits
    for _ in range(3):
        data = check_ok(*await api("GET", "/api/executions"), s.ExecutionList)
        assert data["executions"][0]["duration_seconds"] is not None
    assert cache.hits == hits
    gate.touch()
    await engine.wait(ex)
    assert await listed(api) == ([(ex, "completed")], 1)


async def test_bad_queries_are_refused_every_time(api: Any, listener: ApiListener) -> None:
    assert await listed(api, "?limit=10") == ([], 0)
    for _ in range(2):
        assert "limit" in check_fail(*await api("GET", "/api/executions?limit=5000"), 400)
        check_fail(*await api("GET", "/api/executions?limit=10&offset=-1"), 400)
    assert await listed(api, "?limit=10") == ([], 0)


async def test_the_same_page_for_many_clients_at_once(listener: ApiListener, engine: Any) -> None:
    done = [await submit_command(engine, f"echo {i}") for i in range(5)]
    for ex in done:
        await engine.wait(ex.id)
    async with aiohttp.ClientSession() as session:

        async def page() -> list[str]:
            async with session.get(listener.url + "/api/executions?limit=3") as resp:
                body = await resp.json()
                return [e["id"] for e in check_ok(resp.status, body)["executions"]]

        pages = await asyncio.gather(*(page() for _ in range(20)))
    assert all(p == [ex.id for ex in reversed(done)][:3] for p in pages)

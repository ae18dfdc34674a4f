"""Server-Sent Events (`api_compat.sse`), as RustCI's `logs?follow=true` will use them: a real aiohttp
server on loopback and a real aiohttp client reading the stream. Events arrive in order with their
ids, an idle stream carries keep-alive comments, a client that goes leaves nothing behind on the
server (no stream, no queue, no handler task), a client that falls behind is cut off, and shutdown
ends open streams after what they had queued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api_compat.sse import SseHub
from tests.api.helpers import read_event

pytestmark = pytest.mark.timeout(30)

HUB = web.AppKey("test_sse_hub", SseHub)
TASKS = web.AppKey("test_sse_tasks", list)
WAIT = 5.0


async def follow(request: web.Request) -> web.StreamResponse:
    request.app[TASKS].append(asyncio.current_task())
    async with request.app[HUB].open(request, request.match_info["runner_id"]) as stream:
        if request.query.get("backlog"):
            stream.offer("from the backlog", event="log", id="0")
        await stream.run()
    return stream.response


def make_app(hub: SseHub) -> web.Application:
    app = web.Application()
    app[HUB] = hub
    app[TASKS] = []
    hub.install(app)
    app.router.add_get("/api/runners/{runner_id}/logs", follow)
    return app


@dataclass
class Served:
    app: web.Application
    hub: SseHub
    runner: web.AppRunner
    url: str

    async def close(self) -> None:
        if self.runner.server is not None:
            await self.runner.cleanup()


@pytest.fixture(params=[False, True], ids=["as-the-listener-runs", "with-handler-cancellation"])
async def served(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    """Served as `api_compat.listener` serves (AppRunner + TCPSite on loopback, handlers not cancelled
    when their client goes), and with aiohttp's handler cancellation on."""
    hub = SseHub(keepalive=0.05, limit=50)
    app = make_app(hub)
    runner = web.AppRunner(app, handler_cancellation=request.param, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    served = Served(app, hub, runner, f"http://{host}:{port}")
    try:
        yield served
    finally:
        await served.close()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as s:
        yield s


async def opened(served: Served, session: aiohttp.ClientSession, path: str,
                 count: int = 1) -> aiohttp.ClientResponse:
    hub = served.hub
    resp = await session.get(served.url + path, headers={"Accept": "text/event-stream"})
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    await asyncio.wait_for(hub.wait_for_count(count), WAIT)
    return resp


async def test_published_events_reach_the_streams_of_their_topic_in_order(
        served: Served, session: aiohttp.ClientSession) -> None:
    hub = served.hub
    runner = await opened(served, session, "/api/runners/r1/logs?backlog=1")
    other = await opened(served, session, "/api/runners/r2/logs", count=2)
    assert hub.publish("r1", '{"line": "step 1"}', event="log", id="1") == 1
    assert hub.publish("r1", "two\nlines", event="log", id="2") == 1
    assert hub.publish("r3", "nobody listens") == 0
    assert hub.publish("r2", "for r2", id="9") == 1
    assert await read_event(runner) == {"id": "0", "event": "log", "data": "from the backlog"}
    assert await read_event(runner) == {"id": "1", "event": "log", "data": '{"line": "step 1"}'}
    assert await read_event(runner) == {"id": "2", "event": "log", "data": "two\nlines"}
    assert await read_event(other) == {"id": "9", "data": "for r2"}
    runner.close()
    other.close()


async def test_an_idle_stream_carries_keepalive_comments(
        served: Served, session: aiohttp.ClientSession) -> None:
    resp = await opened(served, session, "/api/runners/r1/logs")
    assert await read_event(resp, comments=True) == {"comment": "ping"}
    assert await read_event(resp, comments=True) == {"comment": "ping"}
    resp.close()


async def test_a_client_that_goes_leaves_nothing_behind(
        served: Served, session: aiohttp.ClientSession) -> None:
    hub = served.hub
    resp = await opened(served, session, "/api/runners/r1/logs")
    (stream,) = hub.streams("r1")
    (handler,) = served.app[TASKS]
    resp.close()  # the connection drops, nothing published meanwhile: the keep-alive notices
    await asyncio.wait_for(stream.ended.wait(), WAIT)
    done, _ = await asyncio.wait([handler], timeout=WAIT)
    assert handler in done  # the handler's task ended: nothing runs for the client any more
    assert hub.count == 0 and not hub.streams("r1")
    assert hub.publish("r1", "after the client left") == 0  # costs nothing: no stream to queue for
    assert not stream.offer("late") and stream.waiting == 0


async def test_a_client_that_falls_behind_is_cut_off(
        served: Served, session: aiohttp.ClientSession) -> None:
    hub = served.hub
    resp = await opened(served, session, "/api/runners/r1/logs")
    (stream,) = hub.streams("r1")
    # published faster than the stream writes (it has not run since): the 51st finds the queue full
    taken = [hub.publish("r1", f"line {n}", id=str(n)) for n in range(hub.limit + 1)]
    assert taken == [1] * hub.limit + [0]
    assert stream.overflowed
    assert await read_event(resp) == {"eof": ""}  # the client sees the end, reconnects with Last-Event-ID
    await asyncio.wait_for(hub.wait_for_count(0), WAIT)


async def test_shutdown_ends_open_streams_after_what_they_queued(
        served: Served, session: aiohttp.ClientSession) -> None:
    hub = served.hub
    first = await opened(served, session, "/api/runners/r1/logs")
    second = await opened(served, session, "/api/runners/r2/logs", count=2)
    hub.publish("r1", "last words", id="7")
    closing = asyncio.create_task(served.close())
    assert await read_event(first) == {"id": "7", "data": "last words"}
    assert await read_event(first) == {"eof": ""}
    assert await read_event(second) == {"eof": ""}
    await asyncio.wait_for(closing, WAIT)
    assert hub.count == 0 and not hub.accepting
    assert hub.publish("r1", "after shutdown") == 0


async def test_a_new_stream_during_shutdown_is_refused(aiohttp_client: Any) -> None:
    hub = SseHub()
    client = await aiohttp_client(make_app(hub))
    await hub.close_all()
    async with client.get("/api/runners/r1/logs") as resp:
        assert resp.status == 503

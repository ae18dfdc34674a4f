"""The shared WebSocket fan-out (`api_compat.ws_fanout`) with another surface's messages than
Monitor's: a RustCI-like hub of runner updates, on a real aiohttp server on loopback with real
clients. Its own first message and replies, the subscription filter by topic, what a client or the
budget dropped said in the surface's own words and in sequence, a gone client unregistered, and
shutdown closing the sockets with 1001."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api_compat.ws_fanout import FanoutHub, WsClient, frame

pytestmark = pytest.mark.timeout(30)

WAIT = 5.0


class RunnerHub(FanoutHub):
    """Runner updates: `{"type": ..., "runner_id": ...}` messages, commands `{"subscribe": id}`."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.joined: asyncio.Queue[WsClient] = asyncio.Queue()
        self.left: asyncio.Queue[WsClient] = asyncio.Queue()

    def drop_notice(self, topic: str, count: int, first: int, last: int, why: str) -> str:
        return json.dumps({"type": "lines_dropped", "runner_id": topic, "count": count, "from": first, "to": last})

    def on_open(self, client: WsClient, request: web.Request) -> None:
        client.send(json.dumps({"type": "hello", "client": client.id}))
        self.joined.put_nowait(client)

    async def on_text(self, client: WsClient, text: str) -> None:
        command = json.loads(text)
        if command.get("fail"):
            raise RuntimeError("a handler bug")
        self.subscribe(client, command["subscribe"])
        client.send(json.dumps({"type": "subscribed", "runner_id": command["subscribe"]}))

    def on_binary(self, client: WsClient) -> None:
        client.send(json.dumps({"type": "refused", "reason": "text only"}))

    def on_failure(self, client: WsClient) -> None:
        client.send(json.dumps({"type": "server_error"}))

    def unregister(self, client: WsClient) -> None:
        super().unregister(client)
        self.left.put_nowait(client)

    def log_lines(self, runner_id: str, lines: list[str], first_seq: int) -> None:
        targets, count = self.budgeted(runner_id, len(lines), first_seq)
        if count:
            blob = b"".join(frame(json.dumps({"type": "log", "runner_id": runner_id, "seq": first_seq + i,
                                              "line": line})) for i, line in enumerate(lines[:count]))
            for client in targets:
                client.send_droppable(runner_id, blob, count, first_seq)


HUB = web.AppKey("test_runner_hub", RunnerHub)


@dataclass
class Served:
    hub: RunnerHub
    runner: web.AppRunner
    url: str


async def serve(**options: Any) -> Served:
    hub = RunnerHub(**options)
    app = web.Application()
    app[HUB] = hub

    async def handler(request: web.Request) -> web.StreamResponse:
        return await request.app[HUB].serve(request)

    async def close_sockets(app: web.Application) -> None:
        await hub.stop()

    app.router.add_get("/api/runners/ws", handler)
    app.on_shutdown.append(close_sockets)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await hub.start()
    host, port = runner.addresses[0][:2]
    return Served(hub, runner, f"ws://{host}:{port}/api/runners/ws")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=WAIT)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def connect(served: Served, session: aiohttp.ClientSession) -> tuple[aiohttp.ClientWebSocketResponse,
                                                                              WsClient]:
    ws = await session.ws_connect(served.url)
    client = await asyncio.wait_for(served.hub.joined.get(), WAIT)
    assert (await receive(ws))["type"] == "hello"
    return ws, client


async def test_the_surfaces_own_messages_and_topics(session: aiohttp.ClientSession) -> None:
    served = await serve()
    try:
        r1, _ = await connect(served, session)
        everything, _ = await connect(served, session)
        await r1.send_json({"subscribe": "r1"})
        assert await receive(r1) == {"type": "subscribed", "runner_id": "r1"}
        served.hub.to_interested("r2", json.dumps({"type": "runner_status_change", "runner_id": "r2"}))
        served.hub.to_interested("r1", json.dumps({"type": "runner_status_change", "runner_id": "r1"}))
        served.hub.broadcast(json.dumps({"type": "runner_registered", "runner_id": "r3"}))
        # r1 subscribed: only its runner, and broadcasts; the other never subscribed: everything
        assert [await receive(r1) for _ in range(2)] == [
            {"type": "runner_status_change", "runner_id": "r1"}, {"type": "runner_registered", "runner_id": "r3"}]
        assert [(await receive(everything))["runner_id"] for _ in range(3)] == ["r2", "r1", "r3"]
        await r1.send_bytes(b"\x00")
        assert await receive(r1) == {"type": "refused", "reason": "text only"}
        await r1.send_json({"fail": True})
        assert await receive(r1) == {"type": "server_error"}  # the socket stays open
        await r1.send_json({"subscribe": "r4"})
        assert await receive(r1) == {"type": "subscribed", "runner_id": "r4"}
    finally:
        await served.runner.cleanup()


async def test_what_a_lagging_client_lost_is_said_in_sequence(session: aiohttp.ClientSession) -> None:
    served = await serve(client_queue=3, log_budget=0)
    try:
        ws, _ = await connect(served, session)
        for seq in range(5):  # written later, together: the queue holds 3
            served.hub.log_lines("r1", [f"line {seq}"], seq)
        served.hub.to_interested("r1", json.dumps({"type": "runner_status_change", "runner_id": "r1"}))
        got = [await receive(ws) for _ in range(5)]
        assert [m.get("seq") for m in got[:3]] == [0, 1, 2]
        assert got[3] == {"type": "lines_dropped", "runner_id": "r1", "count": 2, "from": 3, "to": 4}
        assert got[4]["type"] == "runner_status_change"
    finally:
        await served.runner.cleanup()


async def test_what_the_budget_dropped_is_said_before_the_next_message(session: aiohttp.ClientSession) -> None:
    served = await serve(log_budget=1)  # at least 20 a second: 5 per quarter second
    try:
        first, _ = await connect(served, session)
        second, _ = await connect(served, session)
        served.hub.log_lines("r1", [f"line {n}" for n in range(12)], 100)
        served.hub.to_interested("r1", json.dumps({"type": "runner_status_change", "runner_id": "r1"}))
        for ws in (first, second):  # dropped for everyone alike
            got = [await receive(ws) for _ in range(7)]
            assert [m["seq"] for m in got[:5]] == [100, 101, 102, 103, 104]
            assert got[5] == {"type": "lines_dropped", "runner_id": "r1", "count": 7, "from": 105, "to": 111}
            assert got[6]["type"] == "runner_status_change"
    finally:
        await served.runner.cleanup()


async def test_a_gone_client_is_unregistered_and_shutdown_closes_the_rest(session: aiohttp.ClientSession) -> None:
    served = await serve()
    gone, gone_client = await connect(served, session)
    staying, _ = await connect(served, session)
    await gone.send_json({"subscribe": "r1"})
    await receive(gone)
    await gone.close()
    assert await asyncio.wait_for(served.hub.left.get(), WAIT) is gone_client
    assert served.hub.client_count == 1 and served.hub.interested("r1") == {*served.hub.clients}
    cleanup = asyncio.create_task(served.runner.cleanup())
    msg = await staying.receive(timeout=WAIT)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001
    await asyncio.wait_for(cleanup, WAIT)
    assert served.hub.client_count == 0 and not served.hub.accepting

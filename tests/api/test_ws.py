"""The StepFlow Monitor WebSocket, on its own port and at /ws: messages, commands, bad input, and
a slow client (scripted engine, so that the events are exactly known)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from api_compat import ApiListener
from api_compat.monitor.keys import WS_HUB
from engine.model import ExecutionStatus, StepStatus, Stream
from tests.api.conftest import make_config, running
from tests.api.helpers import receive, receive_until
from tests.api.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def scripted_listener(scripted: ScriptedEngine, tmp_path: Path):
    async with running(scripted, make_config(tmp_path, ws_client_queue=500)) as lst:
        yield lst


def ws_urls(lst: ApiListener) -> list[str]:
    return [lst.ws_url or "", f"{lst.ws_url}/ws", lst.url.replace("http", "ws") + "/ws"]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["own-port", "own-port-/ws", "main-port-/ws"])
async def test_connection_established_and_commands(scripted_listener: ApiListener, scripted: ScriptedEngine,
                                                   session: aiohttp.ClientSession, which: int) -> None:
    ex = await scripted.add_command("echo")
    async with session.ws_connect(ws_urls(scripted_listener)[which]) as ws:
        hello = await receive(ws)
        assert hello["type"] == "connection_established"
        assert set(hello["data"]) == {"client_id", "server_time", "connected_clients"}
        assert isinstance(hello["data"]["client_id"], int) and hello["data"]["connected_clients"] == 1
        assert hello["timestamp"].endswith("Z")

        await ws.send_json({"type": "ping"})
        assert (await receive(ws))["type"] == "pong"
        await ws.send_json({"type": "get_status"})
        status = await receive(ws)
        assert status["type"] == "server_status" and status["data"]["connected_clients"] == 1
        await ws.send_json({"type": "get_status", "data": {"execution_id": ex.id}})
        status = await receive(ws)
        assert status["type"] == "execution_status"
        assert status["data"]["execution"]["id"] == ex.id and status["data"]["steps"][0]["kind"] == "branch"
        await ws.send_json({"type": "subscribe", "data": {"execution_id": ex.id}})
        reply = await receive(ws)
        assert reply["type"] == "subscribed" and reply["data"] == {"execution_id": ex.id}
        # the reference web client's form, and its server's (execution_id at the top level)
        await ws.send_json({"type": "subscribe_execution", "data": {"execution_id": ex.id}})
        assert (await receive(ws))["type"] == "subscribed"
        await ws.send_json({"type": "subscribe_execution", "execution_id": ex.id})
        assert (await receive(ws))["type"] == "subscribed"
        await ws.send_json({"type": "unsubscribe", "data": {"execution_id": ex.id}})
        assert (await receive(ws))["type"] == "unsubscribed"


@pytest.mark.parametrize(("raw", "code"), [
    ("not json", "INVALID_MESSAGE"),
    ("[1, 2]", "INVALID_MESSAGE"),
    ('{"data": {}}', "INVALID_MESSAGE"),
    ('{"type": "launch_rockets"}', "UNKNOWN_MESSAGE_TYPE"),
    ('{"type": "subscribe"}', "INVALID_MESSAGE"),
    ('{"type": "subscribe", "data": "x"}', "INVALID_MESSAGE"),
    ('{"type": "subscribe", "data": {"execution_id": 7}}', "INVALID_MESSAGE"),
    ('{"type": "subscribe", "data": {"execution_id": "nope"}}', "NOT_FOUND"),
    ('{"type": "get_status", "data": {"execution_id": "nope"}}', "NOT_FOUND"),
])
async def test_bad_messages_get_an_error_and_the_socket_stays(scripted_listener: ApiListener,
                                                              session: aiohttp.ClientSession,
                                                              raw: str, code: str) -> None:
    async with session.ws_connect(scripted_listener.ws_url) as ws:
        await receive(ws)
        await ws.send_str(raw)
        error = await receive(ws)
        assert error["type"] == "error" and error["data"]["error_code"] == code
        assert set(error["data"]) >= {"execution_id", "error_message", "error_code", "timestamp"}
        await ws.send_bytes(b"\x00")
        assert (await receive(ws))["data"]["error_code"] == "INVALID_MESSAGE"
        await ws.send_json({"type": "ping"})
        assert (await receive(ws))["type"] == "pong"


async def test_plain_http_on_the_ws_port_is_a_400_envelope(scripted_listener: ApiListener,
                                                           session: aiohttp.ClientSession) -> None:
    async with session.get(scripted_listener.ws_url.replace("ws://", "http://") + "/") as resp:
        body = await resp.json()
        assert resp.status == 400 and body["success"] is False


async def test_a_client_subscribed_elsewhere_gets_lifecycle_only(scripted_listener: ApiListener,
                                                                  scripted: ScriptedEngine,
                                                                  session: aiohttp.ClientSession) -> None:
    ex = await scripted.add_command("echo")
    elsewhere = await scripted.add_command("true")
    async with session.ws_connect(scripted_listener.ws_url) as watcher, \
            session.ws_connect(scripted_listener.ws_url) as subscriber:
        await receive(watcher)
        await receive(subscriber)
        await subscriber.send_json({"type": "subscribe", "data": {"execution_id": ex.id}})
        assert (await receive(subscriber))["type"] == "subscribed"
        await watcher.send_json({"type": "subscribe", "data": {"execution_id": elsewhere.id}})
        assert (await receive(watcher))["type"] == "subscribed"
        await scripted.start(ex.id)
        step = await scripted.start_step(ex.id, "build")
        await scripted.log(ex.id, step.id, ["compiling"])
        await scripted.log(ex.id, step.id, ["warning: x"], Stream.STDERR)
        await scripted.finish_step(step)
        await scripted.add_artifact(ex.id, name="r", file_name="r.txt", data=b"r", step_id=step.id)
        await scripted.finish(ex.id)
        got = await receive_until(subscriber, lambda m: m["type"] == "execution_completed")
        assert [m["type"] for m in got] == ["execution_started", "step_update", "log_entry", "log_entry",
                                            "step_update", "artifact_created", "execution_completed"]
        assert got[1]["data"]["step"]["status"] == "running" and got[1]["data"]["step"]["index"] == 1
        assert got[2]["data"]["level"] == "info" and got[3]["data"]["level"] == "error"
        assert got[2]["data"]["content"] == "compiling" and got[2]["data"]["step_id"] == step.id
        assert got[6]["data"]["artifacts_count"] == 1 and got[6]["data"]["total_steps"] == 1
        seen = await receive_until(watcher, lambda m: m["type"] == "execution_completed")
        assert [m["type"] for m in seen] == ["execution_started", "artifact_created", "execution_completed"]


async def test_a_client_that_never_subscribes_gets_everything_until_it_subscribes(
        scripted_listener: ApiListener, scripted: ScriptedEngine, session: aiohttp.ClientSession) -> None:
    """The document's own Python client connects and reads, never subscribing: it sees every
    execution's steps and log. Its first `subscribe` narrows it to that execution."""
    async with session.ws_connect(scripted_listener.ws_url) as ws:
        await receive(ws)
        first = await scripted.add_command("echo")
        await scripted.start(first.id)
        step = await scripted.start_step(first.id, "build")
        await scripted.log(first.id, step.id, ["compiling"])
        await scripted.finish_step(step)
        await scripted.finish(first.id)
        got = await receive_until(ws, lambda m: m["type"] == "execution_completed")
        assert [m["type"] for m in got] == ["execution_started", "step_update", "log_entry", "step_update",
                                            "execution_completed"]
        assert all(m["data"]["execution_id"] == first.id for m in got)
        assert got[2]["data"]["content"] == "compiling" and got[2]["data"]["step_id"] == step.id

        chosen = await scripted.add_command("echo chosen")
        other = await scripted.add_command("echo other")
        await ws.send_json({"type": "subscribe", "data": {"execution_id": chosen.id}})
        assert (await receive(ws))["type"] == "subscribed"
        for ex in (other, chosen):
            await scripted.start(ex.id)
            step = await scripted.start_step(ex.id, "build")
            await scripted.log(ex.id, step.id, [f"line of {ex.id}"])
            await scripted.finish_step(step)
            await scripted.finish(ex.id)
        got = await receive_until(ws, lambda m: m["type"] == "execution_completed"
                                  and m["data"]["execution_id"] == chosen.id)
        assert [(m["type"], m["data"]["execution_id"] == chosen.id) for m in got] == [
            ("execution_started", False), ("execution_completed", False),
            ("execution_started", True), ("step_update", True), ("log_entry", True), ("step_update", True),
            ("execution_completed", True),
        ]


async def test_wildcard_subscription_sees_every_execution(scripted_listener: ApiListener,
                                                          scripted: ScriptedEngine,
                                                          session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(scripted_listener.ws_url) as ws:
        await receive(ws)
        await ws.send_json({"type": "subscribe", "data": {"execution_id": "*"}})
        assert (await receive(ws))["type"] == "subscribed"
        ex = await scripted.add_command("echo")
        await scripted.start(ex.id)
        step = await scripted.start_step(ex.id, "a")
        await scripted.finish_step(step, StepStatus.FAILED)
        await scripted.finish(ex.id, ExecutionStatus.FAILED, 1)
        got = await receive_until(ws, lambda m: m["type"] == "execution_completed")
        assert [m["type"] for m in got] == ["execution_started", "step_update", "step_update", "error",
                                            "execution_completed"]
        assert got[3]["data"]["error_code"] == "EXECUTION_ERROR" and got[3]["data"]["execution_id"] == ex.id
        assert got[-1]["data"]["status"] == "failed" and got[-1]["data"]["exit_code"] == 1


async def receive_quiet(ws: aiohttp.ClientWebSocketResponse, quiet: float = 0.5) -> list[dict]:
    """Every message until none comes for `quiet` seconds."""
    seen: list[dict] = []
    while True:
        try:
            seen.append(await receive(ws, quiet))
        except TimeoutError:
            return seen


def pause_reading(ws: aiohttp.ClientWebSocketResponse) -> asyncio.Transport:
    """Make a client stop reading its socket, as a stuck or slow peer does (the kernel buffers
    fill, then the server's writes wait)."""
    transport = ws._response.connection.transport  # type: ignore[union-attr]
    transport.pause_reading()
    return transport


async def test_a_slow_client_loses_log_entries_not_status_and_is_told(
        scripted_listener: ApiListener, scripted: ScriptedEngine, session: aiohttp.ClientSession) -> None:
    """The queue limit is 500 log entries here. A client that does not read while 2,000 lines of
    8 kB go by gets every status message, LOG_ENTRIES_DROPPED errors, and the lines that fit; a
    client reading next to it gets everything, and the engine never waits."""
    ex = await scripted.add_command("echo")
    async with session.ws_connect(scripted_listener.ws_url) as slow, \
            session.ws_connect(scripted_listener.ws_url) as fast:
        for ws in (slow, fast):
            await receive(ws)
            await ws.send_json({"type": "subscribe", "data": {"execution_id": ex.id}})
            assert (await receive(ws))["type"] == "subscribed"
        fast_messages: list[dict] = []
        fast_progress = asyncio.Condition()

        async def read_fast() -> None:
            while True:
                message = await receive(fast)
                async with fast_progress:
                    fast_messages.append(message)
                    fast_progress.notify_all()
                if message["type"] == "execution_completed":
                    return

        def fast_entries() -> int:
            return sum(m["type"] == "log_entry" for m in fast_messages)

        reader = asyncio.create_task(read_fast())
        transport = pause_reading(slow)
        await scripted.start(ex.id)
        step = await scripted.start_step(ex.id, "flood")
        padding = "x" * 8192
        for batch in range(40):
            await scripted.log(ex.id, step.id, [f"line {batch * 50 + i} {padding}" for i in range(50)])
            # the writer goes at the pace of the client that reads: the one that does not read
            # must not hold either of them back (a fixed sleep made this a race for the CPU)
            sent = (batch + 1) * 50
            async with fast_progress:
                await asyncio.wait_for(fast_progress.wait_for(lambda sent=sent: fast_entries() >= sent), 10)
        await scripted.finish_step(step)
        await scripted.finish(ex.id)
        await asyncio.wait_for(reader, 20)
        assert sum(m["type"] == "log_entry" for m in fast_messages) == 2000
        assert [m["type"] for m in fast_messages if m["type"] != "log_entry"] == [
            "execution_started", "step_update", "step_update", "execution_completed"]

        transport.resume_reading()
        got = await receive_until(slow, lambda m: m["type"] == "execution_completed")
        types = [m["type"] for m in got]
        assert types.count("execution_started") == 1 and types.count("step_update") == 2
        # the status messages jumped ahead of the log entries queued for the lagging client:
        # those (and the notices of what was dropped, in sequence with them) follow
        got += await receive_quiet(slow)
        assert [m["type"] for m in got].count("execution_completed") == 1
        logs = [m for m in got if m["type"] == "log_entry"]
        drops = [m for m in got if m["type"] == "error"]
        assert drops and all(d["data"]["error_code"] == "LOG_ENTRIES_DROPPED" for d in drops)
        assert len(logs) + sum(d["data"]["dropped_count"] for d in drops) == 2000
        assert len(logs) < 2000
        seqs = [m["data"]["seq"] for m in logs]
        assert seqs == sorted(seqs)
        first_drop = drops[0]["data"]
        assert first_drop["execution_id"] == ex.id and first_drop["first_seq"] not in seqs
        assert "/logs" in first_drop["error_message"]


async def test_events_from_before_a_socket_connects_are_not_replayed(
        scripted_listener: ApiListener, scripted: ScriptedEngine, session: aiohttp.ClientSession) -> None:
    ex = await scripted.add_command("echo")
    await scripted.start(ex.id)
    await asyncio.sleep(0.05)
    async with session.ws_connect(scripted_listener.ws_url) as ws:
        await receive(ws)
        await scripted.finish(ex.id)
        msg = await receive(ws)
        assert msg["type"] == "execution_completed"


async def test_shutdown_closes_sockets_with_going_away(scripted: ScriptedEngine, tmp_path: Path,
                                                       session: aiohttp.ClientSession) -> None:
    lst = ApiListener(scripted, make_config(tmp_path))
    await lst.start()
    try:
        own = await session.ws_connect(lst.ws_url)
        main = await session.ws_connect(lst.url + "/ws")
        for ws in (own, main):
            await receive(ws)
    finally:
        await lst.stop()
    for ws in (own, main):
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == aiohttp.WSCloseCode.GOING_AWAY
        await ws.close()


def test_messages_are_json_objects_with_type_data_timestamp() -> None:
    from api_compat.monitor.ws import message

    decoded = json.loads(message("x", {"a": 1}))
    assert set(decoded) == {"type", "data", "timestamp"}


async def test_the_log_budget_drops_for_everyone_tells_them_and_keeps_status(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    """A budget of 400 entries/s for 2 clients: 200/s each, given out per window of 0.25 s. 3,000
    lines in 0.6 s: most are dropped for both, who are told which (in sequence with the entries
    they get), and every status message arrives."""
    config = make_config(tmp_path, ws_log_budget=400)
    async with running(scripted, config) as lst:
        ex = await scripted.add_command("echo")
        clients = [await session.ws_connect(lst.ws_url) for _ in range(2)]
        try:
            for ws in clients:
                await receive(ws)
                await ws.send_json({"type": "subscribe", "data": {"execution_id": ex.id}})
                assert (await receive(ws))["type"] == "subscribed"
            await scripted.start(ex.id)
            step = await scripted.start_step(ex.id, "flood")
            for batch in range(30):
                await scripted.log(ex.id, step.id, [f"line {batch * 100 + i}" for i in range(100)])
                await asyncio.sleep(0.02)
            await scripted.finish_step(step)
            await scripted.finish(ex.id)
            got = [await receive_until(ws, lambda m: m["type"] == "execution_completed") for ws in clients]
        finally:
            for ws in clients:
                await ws.close()
    for messages in got:
        assert [m["type"] for m in messages if m["type"] not in ("log_entry", "error")] == [
            "execution_started", "step_update", "step_update", "execution_completed"]
        logs = [m["data"]["seq"] for m in messages if m["type"] == "log_entry"]
        drops = [m["data"] for m in messages if m["type"] == "error"]
        assert all(d["error_code"] == "LOG_ENTRIES_DROPPED" and "budget" in d["error_message"] for d in drops)
        assert len(logs) + sum(d["dropped_count"] for d in drops) == 3000
        assert 50 <= len(logs) <= 400
        # in sequence: each notice covers the gap between the entries before and after it
        covered = set(logs)
        last = -1
        for m in messages:
            if m["type"] == "log_entry":
                assert m["data"]["seq"] > last
                last = m["data"]["seq"]
            elif m["type"] == "error":
                assert m["data"]["first_seq"] == last + 1
                last = m["data"]["last_seq"]
                covered |= set(range(m["data"]["first_seq"], last + 1))
        assert covered == set(range(3000))
    # the budget is server-wide: both clients got the same entries
    assert [m for m in got[0] if m["type"] == "log_entry"] == [m for m in got[1] if m["type"] == "log_entry"]


async def test_heartbeat_closes_the_silent_not_the_alive(scripted: ScriptedEngine, tmp_path: Path,
                                                         session: aiohttp.ClientSession,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import api_compat.monitor.ws as ws_module

    monkeypatch.setattr(ws_module, "_PING_EVERY", 0.1)
    monkeypatch.setattr(ws_module, "_PING_TIMEOUT", 0.6)
    async with running(scripted, make_config(tmp_path)) as lst:
        alive = await session.ws_connect(lst.ws_url)  # aiohttp answers pings while reading
        silent = await session.ws_connect(lst.ws_url, autoping=False)
        await receive(alive)
        await receive(silent)
        transport = pause_reading(silent)
        # pings come and go every 0.1 s, answered by the client that reads (inside receive())
        reader = asyncio.create_task(alive.receive())
        await asyncio.sleep(1.5)
        assert not reader.done() and not alive.closed
        hub = lst.app[WS_HUB]
        # the silent one is closed (or closing); the one that reads is not
        assert sorted(c._closing for c in hub.clients) in ([False], [False, True])
        transport.resume_reading()
        msg = await silent.receive(timeout=5)
        while msg.type is aiohttp.WSMsgType.PING:
            msg = await silent.receive(timeout=5)
        # the close frame, or the end of the connection when the server gave up waiting for the answer
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
        assert not alive.closed and not reader.done()
        await alive.send_json({"type": "ping"})
        assert json.loads((await reader).data)["type"] == "pong"
        await alive.close()
        await silent.close()

"""The listener over the real engine and a real SQLite file: a marker script's WebSocket messages,
in order, and a graceful shutdown while an execution runs."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_compat import ApiListener, serve
from tests.api.conftest import make_config
from tests.api.helpers import check_ok, receive, receive_until

pytestmark = [pytest.mark.timeout(90)]

MARKER_SCRIPT = textwrap.dedent("""\
    echo "before any step"
    echo "STEP_START:prepare[stop_on_error=false]"
    echo "preparing"
    echo "the report" > report.txt
    echo "ARTIFACT:report.txt:The report"
    echo "STEP_COMPLETE:prepare"
    echo "STEP_START:check"
    echo "::error::something is off"
    echo "careful" >&2
    sleep 0.3  # stderr is another pipe: let it be read while "check" is open
    echo "STEP_COMPLETE:check"
""")


def index_of(messages: list[dict], predicate: Any) -> int:
    for i, m in enumerate(messages):
        if predicate(m):
            return i
    raise AssertionError("no such message")


def step_is(name: str, status: str) -> Any:
    return lambda m: m["type"] == "step_update" and m["data"]["step"]["name"] == name \
        and m["data"]["step"]["status"] == status


def log_is(text: str) -> Any:
    return lambda m: m["type"] == "log_entry" and m["data"]["content"] == text


async def test_every_message_type_in_order_for_a_marker_script(engine: Any, listener: ApiListener,
                                                               session: aiohttp.ClientSession,
                                                               tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    async with session.ws_connect(listener.ws_url) as ws, session.ws_connect(listener.url + "/ws") as other:
        hello = await receive(ws)
        assert hello["type"] == "connection_established"
        await receive(other)
        await ws.send_json({"type": "subscribe", "data": {"execution_id": "*"}})
        assert (await receive(ws))["type"] == "subscribed"
        async with session.post(listener.url + "/api/executions", json={
            "name": "markers", "command": MARKER_SCRIPT, "working_directory": str(workdir),
        }) as resp:
            created = check_ok(resp.status, await resp.json(), expect=201)
        ex_id = created["execution_id"]
        got = await receive_until(ws, lambda m: m["type"] == "execution_completed")

    assert all(m["data"]["execution_id"] == ex_id for m in got)
    types = [m["type"] for m in got]
    assert types[0] == "execution_started" and types[-1] == "execution_completed"
    assert {"execution_started", "step_update", "log_entry", "artifact_created", "error",
            "execution_completed"} == set(types)
    order = [
        index_of(got, lambda m: m["type"] == "execution_started"),
        index_of(got, log_is("before any step")),
        index_of(got, step_is("prepare", "running")),
        index_of(got, log_is("preparing")),
        index_of(got, lambda m: m["type"] == "artifact_created"),
        index_of(got, step_is("prepare", "completed")),
        index_of(got, step_is("check", "running")),
        index_of(got, lambda m: m["type"] == "error"),
        index_of(got, log_is("careful")),
        index_of(got, step_is("check", "completed")),
        index_of(got, lambda m: m["type"] == "execution_completed"),
    ]
    assert order == sorted(order), order

    started = got[0]["data"]
    assert started["name"] == "markers" and started["command"] == MARKER_SCRIPT and started["started_at"]
    prepare = got[index_of(got, step_is("prepare", "running"))]["data"]["step"]
    assert prepare["index"] == 0 and prepare["kind"] == "marker" and prepare["started_at"]
    check = got[index_of(got, step_is("check", "running"))]["data"]["step"]
    assert check["index"] == 1
    careful = got[index_of(got, log_is("careful"))]["data"]
    assert careful["level"] == "error" and careful["step_id"] == check["id"]
    assert got[index_of(got, log_is("preparing"))]["data"]["level"] == "info"
    artifact = got[index_of(got, lambda m: m["type"] == "artifact_created")]["data"]["artifact"]
    assert artifact["name"] == "The report" and artifact["file_name"] == "report.txt"
    assert artifact["download_url"] == f"/api/artifacts/{artifact['id']}/download"
    error = got[index_of(got, lambda m: m["type"] == "error")]["data"]
    assert error["error_code"] == "EXECUTION_ERROR" and "something is off" in error["error_message"]
    done = got[-1]["data"]
    assert done["status"] == "completed" and done["exit_code"] == 0 and done["total_steps"] == 2
    assert done["artifacts_count"] == 1 and done["duration_seconds"] >= 0 and done["completed_at"]
    seqs = [m["data"]["seq"] for m in got if m["type"] == "log_entry"]
    assert seqs == list(range(len(seqs)))

    async with session.get(listener.url + artifact["download_url"]) as resp:
        assert await resp.read() == b"the report\n"
    await engine.wait(ex_id)
    async with session.get(listener.url + f"/api/executions/{ex_id}") as resp:
        detail = check_ok(resp.status, await resp.json())
    assert [s["name"] for s in detail["steps"]] == ["prepare", "check"]
    assert detail["execution"]["status"] == "completed" and len(detail["artifacts"]) == 1


async def test_rest_agrees_with_the_socket_right_after_completion(engine: Any, listener: ApiListener,
                                                                  session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(listener.ws_url) as ws:
        await receive(ws)
        for _ in range(10):
            async with session.post(listener.url + "/api/executions", json={"command": "echo x"}) as resp:
                ex_id = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
            await receive_until(ws, lambda m: m["type"] == "execution_completed")
            async with session.get(listener.url + f"/api/executions/{ex_id}") as resp:
                detail = check_ok(resp.status, await resp.json())
            assert detail["execution"]["status"] == "completed"


async def test_graceful_shutdown_with_a_running_execution(real_engine: Any, tmp_path: Path,
                                                          session: aiohttp.ClientSession) -> None:
    stop = asyncio.Event()
    ready: asyncio.Future[ApiListener] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(real_engine, make_config(tmp_path), shutdown_engine=real_engine.shutdown,
                                       stop=stop, on_ready=ready.set_result))
    listener = await asyncio.wait_for(ready, 10)
    ws = await session.ws_connect(listener.ws_url)
    await receive(ws)
    await ws.send_json({"type": "subscribe", "data": {"execution_id": "*"}})
    await receive(ws)
    async with session.post(listener.url + "/api/executions", json={
        "command": 'echo "STEP_START:long"; sleep 60', "working_directory": str(tmp_path),
    }) as resp:
        ex_id = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
    await receive_until(ws, lambda m: m["type"] == "step_update" and m["data"]["step"]["name"] == "long")

    stop.set()  # what SIGTERM or Ctrl-C does
    got = await receive_until(ws, lambda m: m["type"] == "execution_completed")
    assert got[-1]["data"]["status"] == "cancelled" and got[-1]["data"]["abort_reason"] == "shutdown"
    assert any(step_is("long", "cancelled")(m) for m in got)
    closing = await ws.receive(timeout=10)
    assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == aiohttp.WSCloseCode.GOING_AWAY
    await asyncio.wait_for(server, 20)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with session.get(listener.url + "/api/health"):
            pass

    # what was recorded survives: a new engine on the same data directory reads it back
    from tests.engine_helpers import engine_at

    async with engine_at(real_engine.data_dir) as again:
        stored = await again.get_execution(ex_id)
        assert stored is not None and stored.status.value == "cancelled"
        assert stored.abort_reason is not None and stored.abort_reason.value == "shutdown"


async def test_a_deletion_reaches_every_client_as_execution_deleted(engine: Any, listener: ApiListener,
                                                                    session: aiohttp.ClientSession) -> None:
    """Ours (the document has no such message): DELETE over REST; a client subscribed to nothing and
    one subscribed to the execution both get `execution_deleted`, in the documented envelope."""
    async with session.post(listener.url + "/api/executions", json={"command": "echo bye"}) as resp:
        ex_id = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
    await engine.wait(ex_id)
    async with session.ws_connect(listener.ws_url) as idle, session.ws_connect(listener.url + "/ws") as watcher:
        await receive(idle)
        await receive(watcher)
        await watcher.send_json({"type": "subscribe", "data": {"execution_id": ex_id}})
        assert (await receive(watcher))["type"] == "subscribed"
        async with session.delete(listener.url + f"/api/executions/{ex_id}") as resp:
            check_ok(resp.status, await resp.json())
        for ws in (idle, watcher):
            got = await receive_until(ws, lambda m: m["type"] == "execution_deleted")
            assert [m["type"] for m in got] == ["execution_deleted"]
            assert set(got[0]) == {"type", "data", "timestamp"} and got[0]["data"] == {"execution_id": ex_id}
    async with session.get(listener.url + "/api/executions") as resp:
        assert check_ok(resp.status, await resp.json())["executions"] == []


@pytest.mark.parametrize(("command", "says"), [
    ('echo "STEP_START:build[stop_on_error=true]"; echo "STEP_ERROR:the compiler crashed"; sleep 5',
     ["the compiler crashed"]),
    # the shell's "not found" line: "exit code 127" alone does not say what went wrong
    ("no-such-program-stepflow-test --flag", ["no-such-program-stepflow-test", "not found"]),
], ids=["step-error-stop-on-error", "missing-program"])
async def test_a_failed_run_sends_an_error_message(engine: Any, listener: ApiListener,
                                                   session: aiohttp.ClientSession, tmp_path: Path,
                                                   command: str, says: list[str]) -> None:
    """A run that fails tells the clients that get its events with an `error` message, in the
    document's shape, before its `execution_completed`; a client subscribed to another execution
    gets none."""
    async with session.post(listener.url + "/api/executions", json={"command": "true"}) as resp:
        elsewhere = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
    await engine.wait(elsewhere)
    async with session.ws_connect(listener.ws_url) as ws, session.ws_connect(listener.ws_url) as other:
        await receive(ws)
        await receive(other)
        await other.send_json({"type": "subscribe", "data": {"execution_id": elsewhere}})
        assert (await receive(other))["type"] == "subscribed"
        async with session.post(listener.url + "/api/executions", json={
            "command": command, "working_directory": str(tmp_path),
        }) as resp:
            ex_id = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
        got = await receive_until(ws, lambda m: m["type"] == "execution_completed"
                                  and m["data"]["execution_id"] == ex_id)
        seen = await receive_until(other, lambda m: m["type"] == "execution_completed"
                                   and m["data"]["execution_id"] == ex_id)

    assert got[-1]["data"]["status"] == "failed"
    errors = [m for m in got if m["type"] == "error"]
    assert len(errors) == 1, got
    error = errors[0]
    assert set(error) == {"type", "data", "timestamp"}
    assert {"execution_id", "error_message", "error_code", "timestamp"} <= set(error["data"])
    assert error["data"]["execution_id"] == ex_id and error["data"]["error_code"] == "EXECUTION_ERROR"
    assert all(part in error["data"]["error_message"] for part in says), error
    assert error["data"]["timestamp"]
    assert not [m for m in seen if m["type"] == "error"]


async def test_the_documents_python_client_never_subscribes_and_sees_its_run(
        engine: Any, listener: ApiListener, session: aiohttp.ClientSession, tmp_path: Path) -> None:
    """The document's Python example connects and only reads: it gets the run's steps and log
    lines as they happen. Once it subscribes to one execution, another one's are no longer sent."""
    async with session.ws_connect(listener.ws_url) as ws:
        await receive(ws)
        async with session.post(listener.url + "/api/executions", json={
            "command": 'echo "STEP_START:build"; echo compiling; echo "STEP_COMPLETE:build"',
            "working_directory": str(tmp_path),
        }) as resp:
            first = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
        got = await receive_until(ws, lambda m: m["type"] == "execution_completed")
        assert any(step_is("build", "running")(m) for m in got)
        assert any(step_is("build", "completed")(m) for m in got)
        assert got[index_of(got, log_is("compiling"))]["data"]["execution_id"] == first

        # a long one to subscribe to, then a short one that this client no longer follows
        async with session.post(listener.url + "/api/executions", json={
            "command": 'echo "STEP_START:wait"; sleep 30', "working_directory": str(tmp_path),
        }) as resp:
            chosen = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
        await ws.send_json({"type": "subscribe", "data": {"execution_id": chosen}})
        await receive_until(ws, lambda m: m["type"] == "subscribed")
        async with session.post(listener.url + "/api/executions", json={
            "command": 'echo "STEP_START:other"; echo unseen', "working_directory": str(tmp_path),
        }) as resp:
            other = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
        seen = await receive_until(ws, lambda m: m["type"] == "execution_completed"
                                   and m["data"]["execution_id"] == other)
        assert [m["type"] for m in seen if m["data"].get("execution_id") == other] == [
            "execution_started", "execution_completed"]
        await engine.cancel(chosen)
        await receive_until(ws, lambda m: m["type"] == "execution_completed"
                            and m["data"]["execution_id"] == chosen)

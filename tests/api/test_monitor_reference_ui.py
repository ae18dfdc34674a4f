"""The reference implementation's web UI (johnnynv/StepFlow_Monitor, app/static/js and
app/templates) against `serve --monitor-shape reference`: its calls replayed as its JavaScript makes
them (same URLs, methods, bodies and headers), and the fields it reads checked, on the real engine,
a real SQLite file and a real listener on loopback.

What the UI calls and reads:
- every request (api.js `APIClient.request`): `/api` + the endpoint, `Content-Type: application/json`
  on every method, a JSON body only for POST with data; only `response.ok` is checked, then the
  answer is read without an envelope;
- dashboard (dashboard.js, at once): `GET /executions/statistics` -> `total_executions`,
  `active_now`, `success_rate`, `avg_duration`; `GET /executions?limit=10` -> `executions[]`: `id`,
  `name`, `command`, `status`, `duration_seconds`, `started_at`; `GET /executions/active` ->
  `executions[]`: `id`, `name`, `command`, `progress_percentage`, `completed_steps`, `total_steps`;
- "new execution" form: `POST /executions {name, command, working_directory, timeout}` -> `id`,
  `name`; then `/execution?id=<id>`;
- cancel buttons: `POST /executions/{id}/cancel`, no body;
- history: `GET /executions?limit=10` -> also `completed_at`;
- execution page (every 2 s): `GET /executions/{id}` -> `execution`: `name`, `id`, `command`,
  `status`, `started_at`, `completed_at`; `steps[]`: `name`, `status`, `duration_seconds`, `index`,
  `id`, `logs[]`: `timestamp`, `content`; `artifacts[]`: `name`, `file_name`, `artifact_type`,
  `file_size`, `description`, `file_path` (opened to download), `id`;
- api.js besides: `GET /executions/{id}/logs[?step_id=]` -> `logs[]`: `timestamp`, `message`;
  `GET /artifacts/execution/{id}` -> `artifacts`; `GET /health`, `/health/status`, `/artifacts/{id}`;
- WebSocket (websocket.js, `ws://localhost:8765`): `execution_update` (`data.execution_id`),
  `execution_started` and `execution_completed` (`data.name` or `data.id`, `data.status`); it may
  send `ping`, `subscribe_execution`, `get_status` as `{type, data, timestamp}`.

The page is served elsewhere (its server proxies `/api`): a browser sends the page's `Origin` on a
POST and on the WebSocket handshake, not on a same-origin GET; that origin is allowed the documented
way, `STEPFLOW_CORS_ORIGINS`.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_compat import ApiConfig, ApiListener
from api_compat.config import ConfigError
from engine.events import ExecutionUpdated
from tests.api.conftest import make_config, running
from tests.api.helpers import finish, receive, receive_until

pytestmark = [pytest.mark.timeout(60)]

UI_ORIGIN = "http://localhost:9000"
STEPS = ("echo STEP_START:build; echo compiling; echo STEP_COMPLETE:build; "
         "echo STEP_START:test; echo passed; echo STEP_COMPLETE:test")


class Ui:
    """The UI's `APIClient.request`, against one listener."""

    def __init__(self, session: aiohttp.ClientSession, listener: ApiListener) -> None:
        self.session = session
        self.listener = listener

    async def request(self, method: str, endpoint: str, data: Any = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if method != "GET":
            headers["Origin"] = UI_ORIGIN  # the browser's, on a POST even to its own origin
        body = json.dumps(data) if data is not None and method in ("POST", "PUT") else None
        async with self.session.request(method, f"{self.listener.url}/api{endpoint}", headers=headers,
                                        data=body) as resp:
            assert resp.ok, (resp.status, await resp.text())  # the UI throws otherwise
            assert "application/json" in resp.headers["Content-Type"]
            if method != "GET":
                assert resp.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
            return await resp.json()

    async def status_of(self, method: str, endpoint: str) -> tuple[int, Any]:
        async with self.session.request(method, f"{self.listener.url}/api{endpoint}",
                                        headers={"Content-Type": "application/json"}) as resp:
            return resp.status, await resp.json()

    async def dashboard(self) -> tuple[Any, Any, Any]:
        return await asyncio.gather(  # Promise.all in loadDashboardData
            self.request("GET", "/executions/statistics"),
            self.request("GET", "/executions?limit=10"),
            self.request("GET", "/executions/active"),
        )


@pytest.fixture
async def listener(engine: Any, tmp_path: Path) -> AsyncIterator[ApiListener]:
    config = make_config(tmp_path, monitor_shape="reference", cors_origins=(UI_ORIGIN,))
    async with running(engine, config) as lst:
        yield lst


@pytest.fixture
async def ui(listener: ApiListener) -> AsyncIterator[Ui]:
    async with aiohttp.ClientSession() as session:
        yield Ui(session, listener)


async def submit(ui: Ui, command: str, name: str | None = None, timeout: str = "") -> dict[str, Any]:
    """The "new execution" form: FormData, then JSON.stringify (which leaves out what is undefined)."""
    data: dict[str, Any] = {"command": command, "working_directory": "."}
    if name:
        data["name"] = name
    if timeout:
        data["timeout"] = int(timeout)
    return await ui.request("POST", "/executions", data)


async def in_its_first_step(engine: Any, execution_id: str) -> None:
    """Until the execution runs and counts its first step, in the store too."""
    events = engine.subscribe()
    try:
        execution = await engine.get_execution(execution_id)
        if execution.total_steps < 1:
            async with asyncio.timeout(10):
                async for event in events:
                    if (isinstance(event, ExecutionUpdated) and event.execution_id == execution_id
                            and event.execution.total_steps >= 1):
                        break
    finally:
        events.close()
    await engine.writer.barrier()


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)  # `new Date(...)` must read it


async def test_the_form_then_the_dashboard_history_and_cancel(ui: Ui, engine: Any, tmp_path: Path) -> None:
    created = await submit(ui, STEPS, name="build and test", timeout="60")
    # what handleNewExecution shows and where it goes: the name, then /execution?id=<id>
    assert created["name"] == "build and test" and re.fullmatch(r"[0-9a-f-]{36}", created["id"])
    assert "warnings" not in created  # `timeout` is a field of ours, not an unknown one
    assert (await finish(engine, created["id"])).status == "completed"
    failed = await submit(ui, "echo no; exit 3")
    assert created["id"] != failed["id"] and failed["name"]  # unnamed: named after its command
    await finish(engine, failed["id"])
    gate = tmp_path / "go"
    held = await submit(ui, held_command(gate), name="held")
    await in_its_first_step(engine, held["id"])

    stats, recent, active = await ui.dashboard()
    assert (stats["total_executions"], stats["active_now"]) == (3, 1)
    assert stats["success_rate"] == "50.0%"
    assert re.fullmatch(r"\d+\.\ds", stats["avg_duration"])
    rows = {e["id"]: e for e in recent["executions"]}
    assert list(rows) == [held["id"], failed["id"], created["id"]]  # newest first
    done = rows[created["id"]]
    assert (done["name"], done["command"], done["status"]) == ("build and test", STEPS, "completed")
    assert done["duration_seconds"] > 0 and when(done["started_at"]) <= when(done["completed_at"])
    assert rows[failed["id"]]["status"] == "failed"
    assert rows[held["id"]]["status"] == "running"  # its row shows a Cancel button
    [live] = active["executions"]
    assert (live["id"], live["name"], live["command"]) == (held["id"], "held", held_command(gate))
    assert (live["completed_steps"], live["total_steps"]) == (0, 1)
    assert isinstance(live["progress_percentage"], (int, float))

    # the Cancel button
    await ui.request("POST", f"/executions/{held['id']}/cancel")
    assert (await finish(engine, held["id"])).status == "cancelled"

    # history: the same list, with completed_at
    history = (await ui.request("GET", "/executions?limit=10"))["executions"]
    assert [(e["id"], e["status"]) for e in history] == [
        (held["id"], "cancelled"), (failed["id"], "failed"), (created["id"], "completed")]
    assert all(e["completed_at"] and e["started_at"] for e in history)
    stats, _recent, active = await ui.dashboard()
    assert stats["active_now"] == 0 and active["executions"] == []
    assert stats["success_rate"] == "33.3%"


def held_command(gate: Path) -> str:
    return f"echo STEP_START:wait; until test -e {gate}; do sleep 0.02; done"


async def test_the_execution_page_shows_steps_with_their_logs_and_artifacts(ui: Ui, engine: Any) -> None:
    created = await submit(ui, STEPS, name="steps")
    await finish(engine, created["id"])
    form = aiohttp.FormData()
    form.add_field("execution_id", created["id"])
    form.add_field("name", "Output Report")
    form.add_field("description", "Generated report")
    form.add_field("file", b"<h1>report</h1>", filename="report.html", content_type="text/html")
    async with ui.session.post(f"{ui.listener.url}/api/artifacts", data=form) as resp:
        assert resp.status == 201
        uploaded = (await resp.json())["artifact"]

    page = await ui.request("GET", f"/executions/{created['id']}")
    execution = page["execution"]
    assert (execution["id"], execution["name"], execution["command"], execution["status"]) == (
        created["id"], "steps", STEPS, "completed")
    assert when(execution["started_at"]) <= when(execution["completed_at"])
    # the steps as the page lists them, (completed/total), each with its output
    assert [(s["name"], s["status"], s["index"]) for s in page["steps"]] == [
        ("build", "completed", 0), ("test", "completed", 1)]
    build, test = page["steps"]
    assert [log["content"] for log in build["logs"]] == ["STEP_START:build", "compiling", "STEP_COMPLETE:build"]
    assert [log["content"] for log in test["logs"]] == ["STEP_START:test", "passed", "STEP_COMPLETE:test"]
    assert all(when(log["timestamp"]) for log in build["logs"] + test["logs"])
    assert build["id"] != test["id"] and isinstance(build["duration_seconds"], (int, float))
    # its artifacts: the Download button opens `file_path`
    [artifact] = page["artifacts"]
    assert (artifact["id"], artifact["name"], artifact["file_name"], artifact["file_size"]) == (
        uploaded["id"], "Output Report", "report.html", 15)
    assert artifact["artifact_type"] == "document" and artifact["description"] == "Generated report"
    async with ui.session.get(ui.listener.url + artifact["file_path"]) as resp:
        assert resp.status == 200 and await resp.read() == b"<h1>report</h1>"

    # api.js's other reads of an execution: its logs, its artifacts
    logs = (await ui.request("GET", f"/executions/{created['id']}/logs"))["logs"]
    assert [log["message"] for log in logs][1:3] == ["compiling", "STEP_COMPLETE:build"]
    assert all(log["timestamp"] for log in logs)
    of_test = (await ui.request("GET", f"/executions/{created['id']}/logs?step_id={test['id']}"))["logs"]
    assert [log["message"] for log in of_test] == ["STEP_START:test", "passed", "STEP_COMPLETE:test"]
    listed = (await ui.request("GET", f"/artifacts/execution/{created['id']}"))["artifacts"]
    assert [a["id"] for a in listed] == [uploaded["id"]]
    one = await ui.request("GET", f"/artifacts/{uploaded['id']}")
    assert one["artifact"]["file_path"] == f"/api/artifacts/{uploaded['id']}/download"


async def test_output_outside_any_step_shows_on_the_execution_page(ui: Ui, engine: Any) -> None:
    # the form's usual case: a command without step markers writes all of its output outside any step
    plain = await submit(ui, "echo hello; echo oops >&2", name="plain")
    await finish(engine, plain["id"])
    [branch] = (await ui.request("GET", f"/executions/{plain['id']}"))["steps"]
    assert (branch["name"], branch["kind"], branch["status"]) == ("local", "branch", "completed")
    assert {(log["content"], log["level"]) for log in branch["logs"]} == {("hello", "info"), ("oops", "error")}
    # with steps, what came before the first: listed first
    mixed = await submit(ui, "echo before; echo STEP_START:late; echo inside", name="mixed")
    await finish(engine, mixed["id"])
    steps = (await ui.request("GET", f"/executions/{mixed['id']}"))["steps"]
    assert [(s["name"], [log["content"] for log in s["logs"]]) for s in steps] == [
        ("local", ["before"]), ("late", ["STEP_START:late", "inside"])]


@pytest.mark.parametrize("count", [1_500, 12_000])  # read at once; read step by step
async def test_a_step_carries_its_newest_thousand_lines(ui: Ui, engine: Any, count: int) -> None:
    created = await submit(ui, f"echo STEP_START:big; seq 1 {count}; echo STEP_COMPLETE:big; "
                               "echo STEP_START:small; echo tiny", name="long log")
    await finish(engine, created["id"])
    big, small = (await ui.request("GET", f"/executions/{created['id']}"))["steps"]
    assert len(big["logs"]) == 1_000 and big["logs_truncated"] is True
    assert big["logs"][0]["content"] == str(count - 998) and big["logs"][-1]["content"] == "STEP_COMPLETE:big"
    assert [log["content"] for log in small["logs"]] == ["STEP_START:small", "tiny"]
    assert small["logs_truncated"] is False


async def test_the_websocket_messages_the_ui_handles(ui: Ui, engine: Any, listener: ApiListener) -> None:
    assert listener.ws_url is not None
    async with ui.session.ws_connect(listener.ws_url, headers={"Origin": UI_ORIGIN}) as ws:
        assert (await receive(ws))["type"] == "connection_established"
        created = await submit(ui, "echo STEP_START:a; sleep 0.3; echo STEP_COMPLETE:a; "
                                   "echo STEP_START:b; echo STEP_COMPLETE:b", name="live")
        ex_id = created["id"]
        seen = await receive_until(ws, lambda m: m["type"] == "execution_update"
                                   and m["data"]["status"] == "completed")
        ours = [m for m in seen if m["data"].get("execution_id") == ex_id]
        kinds = [m["type"] for m in ours]
        # dashboard.js: a notice naming the execution on start and on completion
        [started] = [m["data"] for m in ours if m["type"] == "execution_started"]
        [completed] = [m["data"] for m in ours if m["type"] == "execution_completed"]
        assert (started["name"], started["id"]) == ("live", ex_id)
        assert (completed["name"], completed["id"], completed["status"]) == ("live", ex_id, "completed")
        assert completed["total_steps"] == 2  # the documented fields keep their values
        # the pages reload on execution_update; the execution page only for its own execution_id
        updates = [m["data"] for m in ours if m["type"] == "execution_update"]
        assert updates[0]["status"] == "pending" and updates[-1]["status"] == "completed"
        assert all(u["id"] == ex_id and u["name"] == "live" for u in updates)
        assert updates[-1]["completed_steps"] == 2
        assert kinds.index("execution_started") < kinds.index("execution_completed") < len(kinds) - 1
        # websocket.js's own commands, as its send() frames them
        for kind, data in (("ping", {}), ("subscribe_execution", {"execution_id": ex_id}), ("get_status", {})):
            await ws.send_str(json.dumps({"type": kind, "data": data, "timestamp": "2026-01-01T00:00:00.000Z"}))
        answers = [(await receive(ws))["type"] for _ in range(3)]
        assert answers == ["pong", "subscribed", "server_status"]


async def test_errors_and_health_without_the_envelope(ui: Ui) -> None:
    status, body = await ui.status_of("GET", "/executions/no-such-id")
    assert status == 404 and body == {"error": "execution no-such-id not found"}
    status, body = await ui.status_of("POST", "/executions/no-such-id/cancel")
    assert status == 404 and body == {"error": "no execution no-such-id"}
    # what a request carried that was ignored: beside the fields, as in the documented envelope
    created = await ui.request("POST", "/executions", {"command": "true", "priority_hint": 1})
    assert created["id"] and created["warnings"] == ["unknown field 'priority_hint' ignored"]
    health = await ui.request("GET", "/health")
    assert health["status"] == "healthy"
    system = await ui.request("GET", "/health/status")
    assert {"system", "database", "websocket"} <= set(system)
    # the document's own shape is still what GET /api/openapi.json describes, and the default
    async with ui.session.get(f"{ui.listener.url}/api/openapi.json") as resp:
        assert resp.status == 200 and "paths" in await resp.json()


async def test_the_documented_envelope_stays_the_default(engine: Any, tmp_path: Path) -> None:
    async with running(engine, make_config(tmp_path)) as lst, aiohttp.ClientSession() as session:
        async with session.get(f"{lst.url}/api/executions/statistics") as resp:
            body = await resp.json()
        assert body["success"] is True and body["data"]["statistics"]["total_executions"] == 0
        async with session.get(f"{lst.url}/api/artifacts/execution/x") as resp:
            assert resp.status == 404  # a route of the reference shape only


def test_the_shape_is_chosen_by_environment_and_refused_when_unknown(tmp_path: Path) -> None:
    assert ApiConfig.from_env({}).monitor_shape == "documented"
    assert ApiConfig.from_env({"STEPFLOW_MONITOR_SHAPE": "Reference"}).monitor_shape == "reference"
    assert ApiConfig.from_env({"STEPFLOW_MONITOR_SHAPE": "reference"}, monitor_shape="documented").monitor_shape \
        == "documented"  # the command line wins
    with pytest.raises(ConfigError, match="STEPFLOW_MONITOR_SHAPE"):
        ApiConfig.from_env({"STEPFLOW_MONITOR_SHAPE": "v0"}).check()


def test_serve_monitor_shape_reference(tmp_path: Path) -> None:
    from tests.test_cli import read_until, spawn

    proc = spawn(tmp_path, "serve", "--port", "0", "--ws-port", "0", "--monitor-shape", "reference")
    try:
        match = re.search(r"serving (http://127\.0\.0\.1:\d+)", read_until(proc, "serving"))
        assert match is not None

        async def dashboard_counts() -> Any:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{match[1]}/api/executions/statistics",
                                       headers={"Content-Type": "application/json"}) as resp:
                    return await resp.json()

        stats = asyncio.run(dashboard_counts())
        assert (stats["total_executions"], stats["active_now"], stats["success_rate"]) == (0, 0, "0.0%")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)

"""Issue 12 item 3: an execution's `steps` in the Monitor API are its workflow and marker steps,
indexed from 0, with `total_steps` and `current_step_index` agreeing with them; no branch step
(`local`) in the list nor in a `step_update`. Several targets: each step's `target` tells them apart."""

from __future__ import annotations

import textwrap
from typing import Any

import aiohttp
import pytest

from api_compat import ApiListener
from tests.api.helpers import check_ok, receive, receive_until

pytestmark = [pytest.mark.timeout(60)]

TWO_MARKERS = 'echo "STEP_START:prepare"; echo x; echo "STEP_COMPLETE:prepare"; ' \
              'echo "STEP_START:check"; echo y; echo "STEP_COMPLETE:check"'

TWO_TARGETS = textwrap.dedent("""\
    name: fan
    targets: {t1: {type: local}, t2: {type: local}}
    runs_on: [t1, t2]
    steps:
      - {name: build, run: echo built}
      - {name: test, run: echo tested, needs: [build]}
""")


async def _run(session: aiohttp.ClientSession, listener: ApiListener, path: str,
               body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    async with session.ws_connect(listener.ws_url) as ws:
        await receive(ws)
        await ws.send_json({"type": "subscribe", "data": {"execution_id": "*"}})
        assert (await receive(ws))["type"] == "subscribed"
        async with session.post(listener.url + path, json=body) as resp:
            ex_id = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
        got = await receive_until(ws, lambda m: m["type"] == "execution_completed")
    return ex_id, got


async def _detail(session: aiohttp.ClientSession, listener: ApiListener, ex_id: str,
                  query: str = "") -> dict[str, Any]:
    async with session.get(listener.url + f"/api/executions/{ex_id}{query}") as resp:
        return check_ok(resp.status, await resp.json())


def _consistent(detail: dict[str, Any]) -> None:
    steps, ex = detail["steps"], detail["execution"]
    assert ex["total_steps"] == len(steps)
    assert [s["index"] for s in steps] == list(range(len(steps)))
    assert ex["current_step_index"] is not None and 0 <= ex["current_step_index"] < len(steps)
    assert ex["completed_steps"] == len(steps) and ex["progress_percentage"] == 100
    assert all(s["kind"] != "branch" for s in steps)


async def test_a_single_target_execution_lists_only_its_steps(engine: Any, listener: ApiListener,
                                                              session: aiohttp.ClientSession) -> None:
    ex_id, got = await _run(session, listener, "/api/executions", {"name": "m", "command": TWO_MARKERS})
    await engine.wait(ex_id)
    detail = await _detail(session, listener, ex_id)

    assert [(s["name"], s["index"]) for s in detail["steps"]] == [("prepare", 0), ("check", 1)]
    _consistent(detail)
    assert detail["execution"]["current_step_index"] == 1
    updated = [m["data"]["step"] for m in got if m["type"] == "step_update"]
    assert updated and {s["name"] for s in updated} == {"prepare", "check"}  # never `local`
    assert {s["index"] for s in updated} == {0, 1}


async def test_a_multi_target_execution_tells_its_branches_apart_by_target(
        engine: Any, listener: ApiListener, session: aiohttp.ClientSession) -> None:
    ex_id, got = await _run(session, listener, "/api/workflows", {"text": TWO_TARGETS})
    await engine.wait(ex_id)
    detail = await _detail(session, listener, ex_id)

    assert sorted((s["target"], s["name"]) for s in detail["steps"]) == [
        ("t1", "build"), ("t1", "test"), ("t2", "build"), ("t2", "test")]
    _consistent(detail)
    assert all(m["data"]["step"]["kind"] != "branch" for m in got if m["type"] == "step_update")
    # ours: the remote TUI asks for the branches too (its tree's per-target parents)
    tree = await _detail(session, listener, ex_id, "?branches=true")
    assert sorted(s["name"] for s in tree["steps"] if s["kind"] == "branch") == ["t1", "t2"]

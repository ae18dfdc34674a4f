"""Log lines of parallel steps say which step they come from: `step_name` beside `step_id`, over REST
and the WebSocket."""

from __future__ import annotations

import textwrap
from typing import Any

import aiohttp
import pytest

from api_compat import ApiListener
from tests.api.helpers import check_ok, receive, receive_until

pytestmark = [pytest.mark.timeout(90)]

WORKFLOW = textwrap.dedent("""\
    name: parallel
    steps:
      - name: left
        run: for i in 1 2 3; do echo left-$i; done
      - name: right
        run: echo right-1; echo STEP_START:inner; echo right-inner; echo STEP_COMPLETE:inner
""")


async def test_log_lines_carry_their_steps_name(engine: Any, listener: ApiListener,
                                                session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(listener.ws_url) as ws:
        assert (await receive(ws))["type"] == "connection_established"
        await ws.send_json({"type": "subscribe", "data": {"execution_id": "*"}})
        assert (await receive(ws))["type"] == "subscribed"
        async with session.post(listener.url + "/api/workflows", json={"text": WORKFLOW}) as resp:
            execution_id = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
        got = await receive_until(ws, lambda m: m["type"] == "execution_completed")
    names = {m["data"]["step"]["id"]: m["data"]["step"]["name"] for m in got if m["type"] == "step_update"}
    entries = [m["data"] for m in got if m["type"] == "log_entry"]
    by_text = {e["content"]: e for e in entries}
    expected = {"left-1": "left", "left-3": "left", "right-1": "right", "right-inner": "inner"}
    for text, step in expected.items():
        assert by_text[text]["step_name"] == step, by_text[text]
        assert names[by_text[text]["step_id"]] == step
    async with session.get(f"{listener.url}/api/executions/{execution_id}/logs") as resp:
        lines = check_ok(resp.status, await resp.json())["lines"]
    stored = {line["content"]: line for line in lines}
    for text, step in expected.items():
        assert stored[text]["step_name"] == step, stored[text]
        assert stored[text]["step_id"] == by_text[text]["step_id"]

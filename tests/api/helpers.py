"""Helpers shared by the API tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from pydantic import BaseModel

from api_compat.monitor.schemas import Envelope, ErrorEnvelope
from engine.model import Execution
from tests.api.scripted_engine import ScriptedEngine


async def finish(engine: Any, execution_id: str, within: float = 30) -> Execution:
    """Wait for a real execution to end; end a scripted one at once."""
    if isinstance(engine, ScriptedEngine):
        await engine.start(execution_id)
        await engine.finish(execution_id)
        return (await engine.get_execution(execution_id))  # type: ignore[return-value]
    async with asyncio.timeout(within):
        return await engine.wait(execution_id)


def check_ok(status: int, body: Any, model: type[BaseModel] | None = None, expect: int = 200) -> Any:
    assert status == expect, body
    Envelope[Any].model_validate(body)
    assert body["success"] is True and body["error"] is None
    if model is not None:
        Envelope[model].model_validate(body)  # type: ignore[valid-type]
    return body["data"]


def check_fail(status: int, body: Any, expect: int) -> str:
    assert status == expect, body
    ErrorEnvelope.model_validate(body)
    return body["error"]


def preflight_headers(origin: str, request_headers: str) -> dict[str, str]:
    """What a browser sends from `origin` before a POST with `request_headers`."""
    return {"Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": request_headers}


async def check_preflight(session: aiohttp.ClientSession, base_url: str, origin: str,
                          request_headers: str) -> None:
    """A browser's CORS preflight for POST /api/executions from `origin` is allowed."""
    preflight = preflight_headers(origin, request_headers)
    async with session.options(base_url + "/api/executions", headers=preflight) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]


async def receive(ws: aiohttp.ClientWebSocketResponse, within: float = 10) -> dict[str, Any]:
    msg = await ws.receive(timeout=within)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def receive_until(ws: aiohttp.ClientWebSocketResponse, predicate: Any,
                        within: float = 20) -> list[dict]:
    """Every message up to and including the first for which predicate(message) is true."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while True:
            message = await receive(ws, within)
            seen.append(message)
            if predicate(message):
                return seen


async def read_event(resp: aiohttp.ClientResponse, *, comments: bool = False, wait: float = 30.0) -> dict[str, str]:
    """The next Server-Sent Event's fields (`data` lines joined), within `wait` seconds; with
    `comments`, a comment counts as one (else they are skipped)."""
    fields: dict[str, str] = {}
    while True:
        raw = await asyncio.wait_for(resp.content.readline(), wait)
        if not raw:
            return {"eof": ""}
        line = raw.decode().rstrip("\r\n")
        if not line:
            if fields:
                return fields
            continue
        if line.startswith(":"):
            if comments:
                return {"comment": line[1:].strip()}
            continue
        name, _, value = line.partition(": ")
        fields[name] = fields[name] + "\n" + value if name in fields else value

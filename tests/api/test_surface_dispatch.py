"""One listener, four documented APIs: each request is taken by its own surface only (the route it
matched, else the longest surface prefix of its path, else StepFlow Monitor), answered in that
surface's error body, and checked by that surface's access rules and no other's
(api_compat/error_middleware.py). A real engine and listener on loopback, a real client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_compat import ApiListener, create_token
from tests.api.conftest import make_config, running
from tests.api.helpers import check_fail

pytestmark = pytest.mark.timeout(60)


async def call(session: aiohttp.ClientSession, lst: ApiListener, method: str, path: str,
               **kwargs: Any) -> tuple[int, Any, Any]:
    async with session.request(method, lst.url + path, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def test_an_unknown_route_is_answered_in_the_body_of_the_surface_whose_path_it_is(
        real_engine: Any, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    ops_token = {"Authorization": f"Bearer {create_token(tmp_path)}"}
    async with running(real_engine, make_config(tmp_path)) as lst:
        # RustCI: {"success": false, "error": {"code", "message", "details"}}
        status, body, _ = await call(session, lst, "GET", "/api/runners/r-1/nowhere/else")
        assert status == 404
        assert body["success"] is False and body["error"]["code"] == "NOT_FOUND"
        assert body["error"]["message"] == "no route GET /api/runners/r-1/nowhere/else"
        assert "timestamp" in body["error"]["details"]
        # executr: {"error": message}, nothing else
        status, body, _ = await call(session, lst, "GET", "/api/v1/nowhere")
        assert (status, body) == (404, {"error": "no route GET /api/v1/nowhere"})
        # OpsConductor: its own credential first (the listener's auth is off: it asks anyway) ...
        status, body, _ = await call(session, lst, "GET", "/api/jobs/1/nowhere/else")
        assert status == 401 and body["error"] == "unauthorized"
        # ... then its 404, `/ws/executions` being its prefix, longer than Monitor's `/ws`
        for path in ("/api/jobs/1/nowhere/else", "/ws/executions/nowhere"):
            status, body, _ = await call(session, lst, "GET", path, headers=ops_token)
            assert (status, body) == (404, {"error": "not_found", "message": f"no route GET {path}"})
        # StepFlow Monitor: its envelope, for its prefixes and for any other path
        for path in ("/api/executions/x/nowhere", "/ws/nowhere", "/nowhere"):
            status, body, _ = await call(session, lst, "GET", path)
            assert check_fail(status, body, 404) == f"no route GET {path}"
        # a method a Monitor route does not take: its envelope, with Allow
        status, body, headers = await call(session, lst, "PUT", "/api/health")
        check_fail(status, body, 405)
        assert "GET" in headers["Allow"]


async def test_each_surface_runs_its_own_access_checks_and_no_other(
        real_engine: Any, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with running(real_engine, make_config(tmp_path)) as lst:
        # OpsConductor asks every caller for a token; Monitor, executr and RustCI do not here
        status, body, _ = await call(session, lst, "GET", "/api/jobs")
        assert status == 401 and body["error"] == "unauthorized"
        status, body, headers = await call(session, lst, "GET", "/api/executions?limit=10")
        assert status == 200 and body["success"] is True
        assert not any(name.startswith("X-RateLimit") for name in headers)  # Monitor has no limits
        status, body, headers = await call(session, lst, "GET", "/api/v1/admin/executors")
        assert status == 200 and isinstance(body, list)
        assert not any(name.startswith("X-RateLimit") for name in headers)
        # RustCI counts its requests (registration per address): its headers, its numbers
        status, body, headers = await call(session, lst, "POST", "/api/runners",
                                           json={"name": "native-1", "type": "native"})
        assert status == 201, body
        assert int(headers["X-RateLimit-Remaining"]) < int(headers["X-RateLimit-Limit"])
        status, body, headers = await call(session, lst, "GET", "/api/runners")
        assert status == 200 and [r["name"] for r in body["runners"]] == ["native-1"]
        # a bad RustCI body is RustCI's 400, a bad Monitor body Monitor's
        status, body, _ = await call(session, lst, "POST", "/api/runners", json={"type": "native"})
        assert status == 400 and body["success"] is False and body["error"]["code"] == "INVALID_REQUEST"
        status, body, _ = await call(session, lst, "POST", "/api/executions", json={"name": "no command"})
        assert "command" in check_fail(status, body, 400)

"""OpsConductor's routes as its document asks: a Bearer JWT on every one (the listener's own auth is
off here, on loopback), roles (creating and deleting targets are the administrator's), requests
limited per user with the X-RateLimit headers, and the WebSocket's `?token=`."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp

from api_compat import create_token
from tests.api.opsconductor_helpers import ops_server

TARGET = {"name": "box-1", "type": "local"}


async def test_every_route_needs_a_token_even_with_the_listeners_auth_off(tmp_path: Path) -> None:
    async with ops_server(tmp_path) as ops:
        async with ops.session.get(ops.url + "/api/jobs") as resp:
            assert resp.status == 401
            body = await resp.json()
            assert body["error"] == "unauthorized" and "Bearer" in body["message"]
        async with ops.session.get(ops.url + "/api/jobs", headers={"Authorization": "Bearer nonsense"}) as resp:
            assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
        status, _ = await ops.call("GET", "/api/jobs")
        assert status == 200
        # StepFlow Monitor's routes on the same listener are not OpsConductor's: no token asked
        async with ops.session.get(ops.url + "/api/executions") as resp:
            assert resp.status == 200


async def test_targets_are_created_and_deleted_by_administrators_only(tmp_path: Path) -> None:
    async with ops_server(tmp_path) as ops:
        standard = {"Authorization": f"Bearer {create_token(tmp_path, subject='sam', role='standard')}"}
        async with ops.session.post(ops.url + "/api/targets", json=TARGET, headers=standard) as resp:
            assert resp.status == 403
            body = await resp.json()
            assert body["error"] == "forbidden" and "administrator" in body["message"]
        async with ops.session.get(ops.url + "/api/targets", headers=standard) as resp:
            assert resp.status == 200  # reading is anyone's
        admin = {"Authorization": f"Bearer {create_token(tmp_path, subject='ada', role='administrator')}"}
        async with ops.session.post(ops.url + "/api/targets", json=TARGET, headers=admin) as resp:
            assert resp.status == 201
            target = await resp.json()
        async with ops.session.delete(ops.url + f"/api/targets/{target['id']}", headers=standard) as resp:
            assert resp.status == 403
        async with ops.session.delete(ops.url + f"/api/targets/{target['id']}", headers=admin) as resp:
            assert resp.status == 204


async def test_requests_are_limited_per_user_with_the_documented_headers(tmp_path: Path) -> None:
    limits = (("opsconductor.requests.standard", "3/minute"),)
    async with ops_server(tmp_path, rate_limits=limits) as ops:
        sam = {"Authorization": f"Bearer {create_token(tmp_path, subject='sam', role='standard')}"}
        remaining = []
        for _ in range(3):
            async with ops.session.get(ops.url + "/api/jobs", headers=sam) as resp:
                assert resp.status == 200
                assert resp.headers["X-RateLimit-Limit"] == "3"
                remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
                reset = int(resp.headers["X-RateLimit-Reset"])
                assert time.time() < reset <= time.time() + 61  # a Unix time within the minute
        assert remaining == [2, 1, 0]
        async with ops.session.get(ops.url + "/api/jobs", headers=sam) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1 and resp.headers["X-RateLimit-Remaining"] == "0"
            assert (await resp.json())["error"] == "rate_limited"
        # another user has a count of their own; the administrator a larger limit (500/minute)
        kim = {"Authorization": f"Bearer {create_token(tmp_path, subject='kim', role='standard')}"}
        async with ops.session.get(ops.url + "/api/jobs", headers=kim) as resp:
            assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "2"
        status, _ = await ops.call("GET", "/api/jobs")
        assert status == 200


async def test_the_websocket_takes_its_token_as_a_query_parameter(tmp_path: Path) -> None:
    async with ops_server(tmp_path) as ops:
        ws_url = ops.url.replace("http", "ws", 1) + "/ws/executions"
        try:
            await ops.session.ws_connect(ws_url)
            raise AssertionError("connected without a token")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 401
        socket = await ops.session.ws_connect(ws_url + f"?token={ops.token}")
        assert not socket.closed
        await socket.close()

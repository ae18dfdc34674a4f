"""The RustCI routes' credentials and limits as its document has them, with the listener's auth on:
a Bearer JWT or an X-API-Key, a runner's registration token on that runner's own routes, and the
documented request limits with their headers and RATE_LIMIT_EXCEEDED."""

from __future__ import annotations

from typing import Any

import aiohttp

from api_compat.api_keys import create_api_key
from tests.api.rustci_helpers import RustciApi, rc

__all__ = ["rc"]


async def _get(api: RustciApi, path: str, headers: dict[str, str]) -> tuple[int, Any, Any]:
    async with api.session.get(api.base + path, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def test_an_api_key_opens_the_runner_routes(rc: RustciApi) -> None:
    key, _key_id = create_api_key(rc.tmp, user="ci", role="standard")
    status, body, _ = await _get(rc, "/api/runners", {"X-API-Key": key})
    assert status == 200, body
    status, body, _ = await _get(rc, "/api/runners", {"X-API-Key": key + "x"})
    assert status == 401 and body["error"]["code"] == "AUTHENTICATION_REQUIRED"


async def test_a_registration_token_opens_its_own_runners_routes_only(rc: RustciApi) -> None:
    status, mine = await rc.call("POST", "/api/runners/register", json={"name": "mine", "type": "native"})
    assert status == 201
    other = await rc.register("other")
    token = mine["registration_token"]
    for headers in ({"Authorization": f"Bearer {token}"}, {"X-API-Key": token}):
        status, body, _ = await _get(rc, f"/api/runners/{mine['runner_id']}/status", headers)
        assert status == 200, body
        status, body, _ = await _get(rc, f"/api/runners/{other}/status", headers)
        assert status == 401 and body["error"]["code"] == "AUTHENTICATION_REQUIRED"
        status, body, _ = await _get(rc, "/api/runners", headers)
        assert status == 401
    # unregistered, its token opens nothing
    status, _ = await rc.call("DELETE", f"/api/runners/{mine['runner_id']}")
    assert status == 200
    status, _, _ = await _get(rc, f"/api/runners/{mine['runner_id']}/status", {"Authorization": f"Bearer {token}"})
    assert status == 401


async def test_job_submissions_are_limited_per_runner_with_the_documented_headers(rc: RustciApi) -> None:
    first, second = await rc.register("first"), await rc.register("second")
    await rc.call("POST", f"/api/runners/{first}/stop", json={"graceful": False})
    await rc.call("POST", f"/api/runners/{second}/stop", json={"graceful": False})
    job = {"name": "j", "steps": [{"name": "s", "run": "true"}]}
    remaining = []
    for _ in range(3):
        async with rc.session.post(rc.base + f"/api/runners/{first}/jobs", json=job, headers=rc.auth) as resp:
            assert resp.headers["X-RateLimit-Limit"] == "50"
            remaining.append(int(resp.headers["X-RateLimit-Remaining"]))
    assert remaining == [49, 48, 47]
    async with rc.session.post(rc.base + f"/api/runners/{second}/jobs", json=job, headers=rc.auth) as resp:
        assert resp.headers["X-RateLimit-Remaining"] == "49"  # per runner


async def test_registrations_past_ten_a_minute_from_one_address_are_refused(rc: RustciApi) -> None:
    statuses = []
    for i in range(11):
        async with rc.session.post(rc.base + "/api/runners/register", json={"name": f"r{i}", "type": "native"},
                                   headers=rc.auth) as resp:
            statuses.append(resp.status)
            last: dict[str, Any] = await resp.json()
            headers = resp.headers
    assert statuses == [201] * 10 + [429]
    assert last["success"] is False and last["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert int(headers["Retry-After"]) >= 1 and headers["X-RateLimit-Remaining"] == "0"


async def test_the_websocket_refuses_a_missing_token(rc: RustciApi) -> None:
    try:
        await rc.session.ws_connect(rc.base.replace("http", "ws", 1) + "/api/runners/ws")
        raise AssertionError("connected without a token")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 401

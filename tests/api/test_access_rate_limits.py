"""Request limits declared per surface and route category, counted by the `limits` library's moving
window: the X-RateLimit-* headers' arithmetic, 429 with Retry-After in the surface's body, and the
keys (user, client address, path parameter) kept apart. A real server, a real client."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api_compat import ApiConfig, ConfigError, create_token
from api_compat.api_keys import create_api_key
from api_compat.rate_limits import OPSCONDUCTOR_POLICY, RUSTCI_POLICY
from api_compat.surface import Surface, route
from tests.api.access_surfaces import bearer, call, serving
from tests.api.conftest import make_config
from tests.api.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.timeout(60)


def rate(headers: Any) -> tuple[int, int, int]:
    return (int(headers["X-RateLimit-Limit"]), int(headers["X-RateLimit-Remaining"]),
            int(headers["X-RateLimit-Reset"]))


async def test_the_headers_count_down_per_user_then_429_with_retry_after(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    ann = create_token(tmp_path, subject="ann", role="standard")
    bob = create_token(tmp_path, subject="bob", role="standard")
    ada = create_token(tmp_path, subject="ada", role="administrator")
    async with serving(scripted, make_config(tmp_path)) as url:
        whoami = url + "/api/testops/whoami"
        first = time.time()
        resets = set()
        for n in range(1, 6):  # 5/minute for a standard user
            status, body, headers = await call(session, "GET", whoami, headers=bearer(ann))
            assert status == 200, body
            limit, remaining, reset = rate(headers)
            assert (limit, remaining) == (5, 5 - n)
            resets.add(reset)
        # the moving window frees its oldest request a minute after it was made (a Unix timestamp)
        assert len(resets) == 1
        (reset,) = resets
        assert math.floor(first) + 60 <= reset <= math.ceil(time.time()) + 60
        status, body, headers = await call(session, "GET", whoami, headers=bearer(ann))
        assert status == 429
        assert body["error"] == "rate_limited" and "rate limit" in body["message"]  # the surface's own body
        assert rate(headers) == (5, 0, reset)
        assert 1 <= int(headers["Retry-After"]) <= 60
        assert abs(int(headers["Retry-After"]) - (reset - time.time())) <= 2
        # refused requests are not counted: still 0 left, same reset
        status, _, headers = await call(session, "POST", url + "/api/testops/things", headers=bearer(ann))
        assert status == 429 and rate(headers) == (5, 0, reset)
        # another user has a count of his own
        status, _, headers = await call(session, "GET", whoami, headers=bearer(bob))
        assert status == 200 and rate(headers)[:2] == (5, 4)
        # an administrator has the higher limit, and every answer carries the headers (403 too: bob)
        for n in range(1, 9):
            status, _, headers = await call(session, "POST", url + "/api/testops/things", headers=bearer(ada))
            assert status == 200 and rate(headers)[:2] == (8, 8 - n)
        status, _, headers = await call(session, "GET", whoami, headers=bearer(ada))
        assert status == 429 and rate(headers)[:2] == (8, 0)
        status, body, headers = await call(session, "POST", url + "/api/testops/things", headers=bearer(bob))
        assert status == 403 and rate(headers)[:2] == (5, 3)
        # a 404 under the surface's prefix counts and says so too
        status, body, headers = await call(session, "GET", url + "/api/testops/nothing", headers=bearer(bob))
        assert status == 404 and body["error"] == "not_found" and rate(headers)[:2] == (5, 2)
        # a streamed answer gets the headers as it is prepared
        async with session.get(url + "/api/testops/stream", headers=bearer(bob)) as resp:
            assert resp.status == 200 and await resp.text() == "one\ntwo\n"
            assert rate(resp.headers)[:2] == (5, 1)
        # Monitor's routes declare no limit: no headers
        async with session.get(url + "/api/health") as resp:
            assert resp.status == 200 and "X-RateLimit-Limit" not in resp.headers


async def test_the_limit_lets_a_user_in_again_after_retry_after(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    ann = create_token(tmp_path, subject="ann", role="standard")
    config = make_config(tmp_path, rate_limits=(("ops.requests.standard", "2/second"),))
    async with serving(scripted, config) as url:
        whoami = url + "/api/testops/whoami"
        for remaining in (1, 0):
            status, _, headers = await call(session, "GET", whoami, headers=bearer(ann))
            assert status == 200 and rate(headers)[:2] == (2, remaining)
        status, _, headers = await call(session, "GET", whoami, headers=bearer(ann))
        assert status == 429
        await asyncio.sleep(int(headers["Retry-After"]))  # what the answer asked a client to do
        status, _, headers = await call(session, "GET", whoami, headers=bearer(ann))
        assert status == 200 and rate(headers)[0] == 2


async def test_categories_count_by_client_address_runner_and_user(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    key, _ = create_api_key(tmp_path, user="ci", role="administrator")
    token = create_token(tmp_path, subject="ci", role="administrator")  # the same user as the key
    async with serving(scripted, make_config(tmp_path, auth_enabled=True)) as url:
        auth = {"X-API-Key": key}
        # registration: per client address, 3/minute, whichever credential
        for n, headers in enumerate((auth, bearer(token), auth), 1):
            status, _, resp_headers = await call(session, "POST", url + "/api/testrunners/register", headers=headers)
            assert status == 200 and rate(resp_headers)[:2] == (3, 3 - n)
        status, body, resp_headers = await call(session, "POST", url + "/api/testrunners/register", headers=auth)
        assert status == 429 and body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        assert body["error"]["details"]["limit"] == 3 and "Retry-After" in resp_headers
        # status: per runner, 4/minute each
        for n in range(1, 5):
            status, _, resp_headers = await call(session, "GET", url + "/api/testrunners/r1/status", headers=auth)
            assert status == 200 and rate(resp_headers)[:2] == (4, 4 - n)
        status, _, _ = await call(session, "GET", url + "/api/testrunners/r1/status", headers=auth)
        assert status == 429
        status, _, resp_headers = await call(session, "GET", url + "/api/testrunners/r2/status", headers=auth)
        assert status == 200 and rate(resp_headers)[:2] == (4, 3)
        # jobs: per runner too, apart from status
        status, _, resp_headers = await call(session, "POST", url + "/api/testrunners/r1/jobs", headers=auth)
        assert status == 200 and rate(resp_headers)[:2] == (3, 2)
        # bulk: per user, the key and the token of user "ci" share it
        for headers, remaining in ((auth, 1), (bearer(token), 0)):
            status, _, resp_headers = await call(session, "POST", url + "/api/testrunners/bulk", headers=headers)
            assert status == 200 and rate(resp_headers)[:2] == (2, remaining)
        status, _, _ = await call(session, "POST", url + "/api/testrunners/bulk", headers=auth)
        assert status == 429
        # a route with no category is not limited
        async with session.get(url + "/api/testrunners", headers=auth) as resp:
            assert resp.status == 200 and "X-RateLimit-Limit" not in resp.headers


async def test_limits_are_configurable_and_a_wrong_name_stops_the_listener(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    ann = create_token(tmp_path, subject="ann", role="standard")
    ada = create_token(tmp_path, subject="ada", role="administrator")
    config = make_config(tmp_path, rate_limits=(("ops.requests.standard", "100/minute"),
                                                ("ops.requests.administrator", "off"),
                                                ("runners.registration", "1/hour")))
    async with serving(scripted, config) as url:
        status, _, headers = await call(session, "GET", url + "/api/testops/whoami", headers=bearer(ann))
        assert status == 200 and rate(headers)[:2] == (100, 99)
        status, _, headers = await call(session, "GET", url + "/api/testops/whoami", headers=bearer(ada))
        assert status == 200 and "X-RateLimit-Limit" not in headers  # off for administrators
        status, _, headers = await call(session, "POST", url + "/api/testrunners/register")
        assert status == 200 and rate(headers)[:2] == (1, 0)
        assert int(headers["X-RateLimit-Reset"]) >= time.time() + 3590
    with pytest.raises(ConfigError, match=r"no such category .*ops\.requests"):
        async with serving(scripted, make_config(tmp_path, rate_limits=(("ops.everything", "1/minute"),))):
            pass
    with pytest.raises(ConfigError, match="not a rate limit"):
        make_config(tmp_path, rate_limits=(("ops.requests", "lots"),)).check()


def test_the_environment_and_serve_take_overrides(tmp_path: Path) -> None:
    config = ApiConfig.from_env({"STEPFLOW_RATE_LIMITS": "opsconductor.requests.standard=200/minute, rustci.jobs=off"})
    assert config.rate_limits == (("opsconductor.requests.standard", "200/minute"), ("rustci.jobs", "off"))
    config.check()
    with pytest.raises(ConfigError, match="SURFACE.CATEGORY"):
        ApiConfig.from_env({"STEPFLOW_RATE_LIMITS": "opsconductor=1/minute"}).check()
    # `serve --rate-limit`: a malformed one is refused before anything starts, and one naming no
    # category of this listener when the listener starts
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path)}
    for value, needle in (("monitor.requests=lots", "not a rate limit"), ("nosuch.requests=1/minute", "no such category")):
        result = subprocess.run([sys.executable, "-m", "stepflow.main", "serve", "--port", "0", "--ws-port",
                                 "0", "--rate-limit", value], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and needle in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


async def test_the_documented_opsconductor_numbers_over_a_hundred_requests(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    ann = create_token(tmp_path, subject="ann", role="standard")
    ada = create_token(tmp_path, subject="ada", role="administrator")
    async with serving(scripted, make_config(tmp_path), ops_policy=OPSCONDUCTOR_POLICY) as url:
        whoami = url + "/api/testops/whoami"
        seen = []
        for _ in range(100):
            status, _, headers = await call(session, "GET", whoami, headers=bearer(ann))
            assert status == 200
            seen.append(rate(headers))
        assert [remaining for _, remaining, _ in seen] == list(range(99, -1, -1))
        assert {limit for limit, _, _ in seen} == {100} and len({reset for _, _, reset in seen}) == 1
        status, body, headers = await call(session, "GET", whoami, headers=bearer(ann))
        assert status == 429 and rate(headers) == (100, 0, seen[0][2]) and int(headers["Retry-After"]) >= 1
        status, _, headers = await call(session, "GET", whoami, headers=bearer(ada))
        assert status == 200 and rate(headers)[:2] == (500, 499)


def test_a_route_declaring_what_its_surface_cannot_count_is_refused_when_added() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    router = web.UrlDispatcher()
    surface = Surface(name="rustci", title="RustCI", rate_policy=RUSTCI_POLICY)
    route(router, surface, "POST", "/api/runners/{runner_id}/jobs", handler, "Submit", "jobs", rate_limit="jobs")
    with pytest.raises(ValueError, match="path parameter 'runner_id'"):
        route(router, surface, "POST", "/api/runners/jobs", handler, "Submit", "jobs", rate_limit="jobs")
    with pytest.raises(ValueError, match="no rate-limit category 'nope'"):
        route(router, surface, "GET", "/api/runners/x", handler, "X", "x", rate_limit="nope")
    with pytest.raises(ValueError, match="role 'root'"):
        route(router, surface, "GET", "/api/runners/y", handler, "Y", "y", role="root")

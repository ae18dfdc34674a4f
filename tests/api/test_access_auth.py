"""Roles in tokens, a surface that always asks for a token, administrator-only routes, API keys
(issue 14 part 5, issue 15 part 7: the shared plumbing), on a real server with a real client."""

from __future__ import annotations

import stat
from pathlib import Path

import aiohttp
import pytest

from api_compat import create_token, revoke_token, token_id
from api_compat.api_keys import create_api_key, keys_path
from api_compat.auth import secret_path
from tests.api.access_surfaces import bearer, call, serving
from tests.api.conftest import make_config
from tests.api.helpers import check_ok
from tests.api.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.timeout(60)


async def test_a_token_always_surface_refuses_without_a_token_even_with_the_listener_auth_off(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    config = make_config(tmp_path)  # auth_enabled False: loopback, no token asked by Monitor
    assert not config.auth_enabled
    async with serving(scripted, config) as url:
        # Monitor answers without a token, as before
        check_ok(*(await call(session, "GET", url + "/api/health"))[:2])
        # the secret exists, so tokens can be minted for the surface that always asks for one
        assert secret_path(tmp_path).exists()
        expired = create_token(tmp_path, subject="ann", role="standard", expires_in=-10)
        foreign = create_token(tmp_path / "elsewhere", subject="ann", role="standard")
        for headers, needle in (({}, "required"), (bearer("nonsense"), "not valid"),
                                (bearer(foreign), "not valid"), (bearer(expired), "expired")):
            status, body, resp_headers = await call(session, "GET", url + "/api/testops/whoami", headers=headers)
            assert status == 401, body
            assert body["error"] == "unauthorized" and needle in body["message"]  # the surface's own body
            assert resp_headers["WWW-Authenticate"].startswith("Bearer")
        good = create_token(tmp_path, subject="ann", role="standard")
        status, body, _ = await call(session, "GET", url + "/api/testops/whoami", headers=bearer(good))
        assert (status, body) == (200, {"user": "ann", "role": "standard", "via": "bearer"})


async def test_administrator_routes_refuse_a_standard_token_with_403(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    standard = create_token(tmp_path, subject="sam", role="standard")
    admin = create_token(tmp_path, subject="ada", role="administrator")
    owners = create_token(tmp_path, subject="stepflow")  # minted before roles: no role claim
    async with serving(scripted, make_config(tmp_path)) as url:
        for method, path in (("POST", "/api/testops/things"), ("DELETE", "/api/testops/things/7")):
            status, body, _ = await call(session, method, url + path, headers=bearer(standard))
            assert status == 403, body
            assert body["error"] == "forbidden" and "administrator" in body["message"]
            assert "sam" in body["message"] and "standard" in body["message"]
            status, body, _ = await call(session, method, url + path, headers=bearer(admin))
            assert (status, body) == (200, {"user": "ada", "role": "administrator", "via": "bearer"})
            status, body, _ = await call(session, method, url + path, headers=bearer(owners))
            assert (status, body["role"]) == (200, "administrator")
        # no token at all: 401 before any role is considered
        status, body, _ = await call(session, "POST", url + "/api/testops/things")
        assert (status, body["error"]) == (401, "unauthorized")
        # the standard user may still use the routes without a role
        status, body, _ = await call(session, "GET", url + "/api/testops/whoami", headers=bearer(standard))
        assert (status, body["user"]) == (200, "sam")


async def test_api_keys_accepted_rejected_and_revoked_on_a_running_server(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    key, key_id = create_api_key(tmp_path, user="runner-bot", role="standard")
    other, other_id = create_api_key(tmp_path, user="ops-admin", role="administrator")
    token = create_token(tmp_path, subject="ann", role="standard")
    # only the hash is kept, owner-only
    stored = keys_path(tmp_path).read_text()
    assert key not in stored and key.split(".", 1)[1] not in stored and key_id in stored
    assert stat.S_IMODE(keys_path(tmp_path).stat().st_mode) == 0o600
    async with serving(scripted, make_config(tmp_path, auth_enabled=True)) as url:
        status, body, _ = await call(session, "GET", url + "/api/testrunners", headers={"X-API-Key": key})
        assert (status, body) == (200, {"user": "runner-bot", "role": "standard", "via": "api_key"})
        # Bearer is accepted there too
        status, body, _ = await call(session, "GET", url + "/api/testrunners", headers=bearer(token))
        assert (status, body["via"]) == (200, "bearer")
        # a wrong key, a key of the right id with the wrong secret: 401 in the surface's body
        forged = key_id + "." + "A" * 43
        for bad in ("sfk_0000000000000000.nope-nope-nope-nope-nope", forged, "garbage"):
            status, body, _ = await call(session, "GET", url + "/api/testrunners", headers={"X-API-Key": bad})
            assert status == 401, body
            assert body["error"]["code"] == "AUTHENTICATION_REQUIRED" and body["success"] is False
        status, body, _ = await call(session, "GET", url + "/api/testrunners")
        assert status == 401 and "X-API-Key" in body["error"]["message"]
        # the role of a key counts like a token's
        status, body, _ = await call(session, "POST", url + "/api/testrunners/bulk", headers={"X-API-Key": key})
        assert (status, body["error"]["code"]) == (403, "AUTHORIZATION_FAILED")
        assert body["error"]["details"]["required_role"] == "administrator"
        status, body, _ = await call(session, "POST", url + "/api/testrunners/bulk", headers={"X-API-Key": other})
        assert (status, body["user"]) == (200, "ops-admin")
        # a surface that does not declare API keys ignores the header
        status, body, _ = await call(session, "GET", url + "/api/testops/whoami", headers={"X-API-Key": key})
        assert (status, body["error"]) == (401, "unauthorized")
        # revoked (by the key itself, or its id): refused at once, no restart
        assert revoke_token(tmp_path, key) == (key_id, True)
        status, body, _ = await call(session, "GET", url + "/api/testrunners", headers={"X-API-Key": key})
        assert status == 401 and "revoked" in body["error"]["message"]
        assert revoke_token(tmp_path, other_id) == (other_id, True)
        assert revoke_token(tmp_path, other_id) == (other_id, False)
        status, _, _ = await call(session, "GET", url + "/api/testrunners", headers={"X-API-Key": other})
        assert status == 401
        # tokens are untouched by revoking keys
        status, _, _ = await call(session, "GET", url + "/api/testrunners", headers=bearer(token))
        assert status == 200
        revoke_token(tmp_path, token_id(token))
        status, _, _ = await call(session, "GET", url + "/api/testrunners", headers=bearer(token))
        assert status == 401


async def test_with_the_listener_auth_off_the_listener_auth_surface_asks_for_nothing(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with serving(scripted, make_config(tmp_path)) as url:
        status, body, _ = await call(session, "POST", url + "/api/testrunners/bulk")
        # the owner on loopback: an administrator
        assert (status, body) == (200, {"user": "owner", "role": "administrator", "via": "none"})


async def test_the_openapi_document_describes_credentials_roles_and_limits(
        scripted: ScriptedEngine, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with serving(scripted, make_config(tmp_path)) as url:
        status, doc, _ = await call(session, "GET", url + "/api/openapi.json")
    assert status == 200
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    whoami = doc["paths"]["/api/testops/whoami"]["get"]
    assert whoami["security"] == [{"bearer": []}]  # always: no anonymous alternative
    create = doc["paths"]["/api/testops/things"]["post"]
    assert create["security"] == [{"bearer": ["administrator"]}]
    assert create["x-required-role"] == "administrator"
    assert "administrator" in create["responses"]["403"]["description"]
    for op in (whoami, create):
        assert {"401", "403", "429"} <= set(op["responses"])
        assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/OpsError")
        assert "Retry-After" in op["responses"]["429"]["headers"]
        for response in op["responses"].values():
            assert set(response["headers"]) >= {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
        assert op["x-rate-limit"]["category"] == "requests"
        assert "100" not in op["x-rate-limit"]["limits"] and "5/minute" in op["x-rate-limit"]["limits"]
    assert "Unix timestamp" in doc["components"]["headers"]["X-RateLimit-Reset"]["description"]
    # the listener-auth surface: anonymous allowed when the listener's auth is off, key or bearer
    listing = doc["paths"]["/api/testrunners"]["get"]
    assert listing["security"] == [{}, {"bearer": []}, {"apiKey": []}]
    assert "x-rate-limit" not in listing and "X-RateLimit-Limit" not in listing["responses"]["200"].get("headers", {})
    status_op = doc["paths"]["/api/testrunners/{runner_id}/status"]["get"]
    assert "per runner" in status_op["x-rate-limit"]["limits"]
    # Monitor's routes are as before: a token only when the listener asks for one, no request limits
    health = doc["paths"]["/api/health"]["get"]
    assert health["security"] == [{}, {"bearer": []}] and "x-rate-limit" not in health

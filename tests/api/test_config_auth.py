"""Configuration, binding, tokens and authentication."""

from __future__ import annotations

import errno
import re
import socket
import stat
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from api_compat import ApiConfig, ApiListener, ConfigError, ListenerError, create_token
from api_compat.auth import secret_path
from tests.api.conftest import make_config, running
from tests.api.helpers import check_fail, check_ok, check_preflight, receive
from tests.api.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.timeout(60)


def test_from_env_reads_the_documented_variables(tmp_path: Path) -> None:
    config = ApiConfig.from_env({
        "STEPFLOW_WEBSOCKET_HOST": "::1",
        "STEPFLOW_WEBSOCKET_PORT": "9765",
        "STEPFLOW_AUTH_ENABLED": "true",
        "STEPFLOW_STORAGE_PATH": str(tmp_path),
        "STEPFLOW_CORS_ORIGINS": "http://a.example, http://b.example/",
        "STEPFLOW_MAX_UPLOAD_MB": "2",
        "STEPFLOW_LOG_LEVEL": "DEBUG",
    }, port=9090)
    assert config.ws_host == "::1" and config.ws_port == 9765 and config.auth_enabled
    assert config.data_dir == tmp_path and config.port == 9090 and config.host == "127.0.0.1"
    assert config.cors_origins == ("http://a.example", "http://b.example")
    assert config.max_upload_bytes == 2 * 1024 * 1024 and config.access_log
    defaults = ApiConfig.from_env({})
    assert (defaults.host, defaults.port, defaults.ws_port, defaults.auth_enabled) == ("127.0.0.1", 8080, 8765,
                                                                                       False)
    assert defaults.cors_origins == ()
    assert ApiConfig.from_env({"STEPFLOW_WEBSOCKET_PORT": "off"}).ws_port is None
    assert defaults.ws_log_budget == 20_000
    assert ApiConfig.from_env({"STEPFLOW_WS_LOG_BUDGET": "0"}).ws_log_budget == 0


@pytest.mark.parametrize(("env", "needle"), [
    ({"STEPFLOW_AUTH_ENABLED": "maybe"}, "STEPFLOW_AUTH_ENABLED"),
    ({"STEPFLOW_WEBSOCKET_PORT": "http"}, "not a port"),
    ({"STEPFLOW_WEBSOCKET_PORT": "70000"}, "not a port"),
    ({"STEPFLOW_MAX_UPLOAD_MB": "lots"}, "megabytes"),
    ({"STEPFLOW_WS_LOG_BUDGET": "many"}, "log entries per second"),
])
def test_from_env_explains_bad_values(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ApiConfig.from_env(env)


@pytest.mark.parametrize("changes", [{"host": "0.0.0.0"}, {"ws_host": "0.0.0.0"}, {"host": "192.0.2.1"}])
async def test_non_loopback_without_auth_is_refused(scripted: ScriptedEngine, tmp_path: Path,
                                                    changes: dict[str, Any]) -> None:
    listener = ApiListener(scripted, make_config(tmp_path, **changes))
    with pytest.raises(ConfigError, match="without authentication"):
        await listener.start()


async def test_non_loopback_with_auth_is_served(scripted: ScriptedEngine, tmp_path: Path,
                                                session: aiohttp.ClientSession) -> None:
    config = make_config(tmp_path, host="0.0.0.0", auth_enabled=True)
    async with running(scripted, config) as lst:
        url = f"http://127.0.0.1:{lst.port}/api/health"
        async with session.get(url) as resp:
            assert resp.status == 401
        token = create_token(tmp_path)
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200


@pytest.mark.parametrize("which", ["port", "ws_port"])
async def test_a_busy_port_is_a_clear_oserror(scripted: ScriptedEngine, tmp_path: Path, which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        listener = ApiListener(scripted, make_config(tmp_path, **{which: port}))
        with pytest.raises(ListenerError) as info:
            await listener.start()
        assert isinstance(info.value, OSError) and info.value.errno == errno.EADDRINUSE
        assert str(info.value).startswith("cannot serve")  # a sentence, no "[Errno 98]"
        assert f"127.0.0.1:{port}" in str(info.value) and "already in use" in str(info.value)
        assert ("--port" if which == "port" else "--ws-port") in str(info.value)
    # nothing was left bound: the same listener starts once the port is free
    async with running(scripted, make_config(tmp_path)) as lst:
        assert lst.port


def test_token_secret_is_private_and_tokens_verify(tmp_path: Path) -> None:
    token = create_token(tmp_path, subject="ci")
    mode = stat.S_IMODE(secret_path(tmp_path).stat().st_mode)
    assert mode == 0o600
    claims = jwt.decode(token, secret_path(tmp_path).read_text().strip(), algorithms=["HS256"],
                        issuer="stepflow")
    assert claims["sub"] == "ci"
    # a second token uses the same secret; a loose mode is tightened
    secret_path(tmp_path).chmod(0o644)
    create_token(tmp_path)
    assert stat.S_IMODE(secret_path(tmp_path).stat().st_mode) == 0o600


#: the paths of OpsConductor's routes answered in its own error body (a GET of its POST-only
#: /api/executions/bulk is Monitor's /api/executions/{execution_id})
_OPSCONDUCTOR = ("/api/jobs", "/api/targets", "/api/analytics", "/ws/executions", "/api/executions/search",
                 "/api/executions/serial/", "/api/executions/branch/")


async def test_auth_on_every_route_and_socket(scripted: ScriptedEngine, tmp_path: Path,
                                              session: aiohttp.ClientSession) -> None:
    token = create_token(tmp_path)
    other = create_token(tmp_path / "elsewhere")
    expired = create_token(tmp_path, expires_in=-10)
    # four failures on every route: more than the default burst of failed authentications
    async with running(scripted, make_config(tmp_path, auth_enabled=True, auth_failure_limit="1000/minute")) as lst:
        app = lst.app
        assert app is not None
        paths = {r.resource.canonical for r in app.router.routes()}
        good = {"Authorization": f"Bearer {token}"}
        for path in sorted(paths):
            concrete = path.replace("{execution_id}", "x").replace("{artifact_id}", "y").replace("{job_id}", "z")
            concrete = re.sub(r"\{[a-z_]+\}", "w", concrete)  # RustCI's runners, OpsConductor's serials, targets
            for headers, expect in (({}, "required"), ({"Authorization": f"Bearer {other}"}, "not valid"),
                                    ({"Authorization": f"Bearer {expired}"}, "expired"),
                                    ({"Authorization": token}, "Bearer")):
                async with session.get(lst.url + concrete, headers=headers) as resp:
                    body = await resp.json()
                    if path.startswith("/api/v1/"):  # executr's own error body
                        assert resp.status == 401
                        error = body["error"]
                    elif path.startswith("/api/runners"):  # RustCI's error body
                        assert resp.status == 401 and body["error"]["code"] == "AUTHENTICATION_REQUIRED"
                        error = body["error"]["message"]
                    elif path.startswith(_OPSCONDUCTOR):  # OpsConductor's own error body
                        assert resp.status == 401 and body["error"] == "unauthorized"
                        error = body["message"]
                    else:
                        error = check_fail(resp.status, body, 401)
                    assert expect in error, (path, error)
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with session.get(lst.url + "/api/health", headers=good) as resp:
            check_ok(resp.status, await resp.json())
        async with session.head(lst.url + "/api/health") as resp:  # HEAD asks for a token too
            assert resp.status == 401
        async with session.head(lst.url + "/api/health", headers=good) as resp:
            assert resp.status == 200
        async with session.get(lst.url + "/api/openapi.json", headers=good) as resp:
            assert resp.status == 200
        for url in (lst.ws_url, lst.url + "/ws"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(url)
            assert info.value.status == 401
            async with session.ws_connect(url, headers=good) as ws:
                assert (await receive(ws))["type"] == "connection_established"
            # browsers cannot set headers on a WebSocket: ?token= is accepted on an upgrade
            async with session.ws_connect(f"{url}?token={token}") as ws:
                assert (await receive(ws))["type"] == "connection_established"
        # ... and only on an upgrade
        async with session.get(f"{lst.url}/api/health?token={token}") as resp:
            assert resp.status == 401


async def test_auth_off_needs_nothing(api: Any) -> None:
    check_ok(*await api("GET", "/api/health"))


async def test_cors_only_when_configured(scripted: ScriptedEngine, tmp_path: Path,
                                         session: aiohttp.ClientSession) -> None:
    origin = {"Origin": "http://ui.example"}
    async with running(scripted, make_config(tmp_path)) as lst:
        async with session.get(lst.url + "/api/health", headers=origin) as resp:
            assert resp.status == 403  # an origin not configured is refused (tests/api/test_cross_site.py)
            assert "Access-Control-Allow-Origin" not in resp.headers
    config = make_config(tmp_path, cors_origins=("http://ui.example",), auth_enabled=True)
    async with running(scripted, config) as lst:
        await check_preflight(session, lst.url, "http://ui.example", "Authorization, Content-Type")
        async with session.get(lst.url + "/api/health", headers=origin) as resp:
            assert resp.status == 401  # an error still carries CORS headers, so a browser can read it
            assert resp.headers["Access-Control-Allow-Origin"] == "http://ui.example"
        async with session.get(lst.url + "/api/health", headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403
            assert "Access-Control-Allow-Origin" not in resp.headers

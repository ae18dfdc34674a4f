"""Cross-site protection (issue 9 item 1): a loopback listener is reachable from every web page the
user opens, so it refuses foreign `Origin`s, `Host`s that are not its own (DNS rebinding) and bodies
of a content type the route does not document, on every route and on both WebSocket handshakes."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_compat import ApiListener, create_token
from tests.api.conftest import make_config, running
from tests.api.helpers import check_fail, check_ok, check_preflight, finish, preflight_headers, receive
from tests.api.scripted_engine import ScriptedEngine

pytestmark = pytest.mark.timeout(60)

EVIL = {"Origin": "http://evil.example"}


async def executions(session: aiohttp.ClientSession, lst: ApiListener) -> list[dict[str, Any]]:
    async with session.get(lst.url + "/api/executions") as resp:
        return check_ok(resp.status, await resp.json())["executions"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_the_issues_curl_is_refused_and_runs_nothing(engine: Any, tmp_path: Path,
                                                         session: aiohttp.ClientSession) -> None:
    pwned = tmp_path / "pwned"
    async with running(engine, make_config(tmp_path)) as lst:
        body = json.dumps({"name": "c", "command": f"touch {pwned}"})
        base = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-XPOST", f"127.0.0.1:{lst.port}/api/executions"]
        for extra in (["-H", "Content-Type: text/plain", "-H", "Origin: http://evil.example"],  # the issue's
                      ["-H", "Content-Type: text/plain"],  # a form or fetch() without preflight
                      ["-H", "Content-Type: application/json", "-H", "Origin: http://evil.example"],
                      ["-H", "Content-Type: application/json", "-H", f"Host: evil.example:{lst.port}"]):
            proc = await asyncio.create_subprocess_exec(*base, *extra, "-d", body,
                                                        stdout=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            text, _, code = out.decode().rpartition("\n")
            assert code in ("403", "415"), (extra, code, text)
            check_fail(int(code), json.loads(text), int(code))
        # the same request as the API's own clients send it runs; the refused ones never did
        ok = tmp_path / "ok"
        async with session.post(lst.url + "/api/executions",
                                json={"name": "fine", "command": f"touch {ok}"}) as resp:
            created = check_ok(resp.status, await resp.json(), expect=201)
        await finish(engine, created["execution_id"])
        assert ok.exists()
        assert not pwned.exists()
        assert [e["name"] for e in await executions(session, lst)] == ["fine"]


async def test_refusals_name_the_reason_in_the_surface_error_body(scripted: ScriptedEngine, tmp_path: Path,
                                                                  session: aiohttp.ClientSession) -> None:
    async with running(scripted, make_config(tmp_path)) as lst:
        async with session.post(lst.url + "/api/executions", data='{"name":"c","command":"true"}',
                                headers={"Content-Type": "text/plain", **EVIL}) as resp:
            assert "origin" in check_fail(resp.status, await resp.json(), 403).lower()
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with session.post(lst.url + "/api/executions", data='{"name":"c","command":"true"}',
                                headers={"Content-Type": "text/plain"}) as resp:
            assert "application/json" in check_fail(resp.status, await resp.json(), 415)
        # an unknown path is refused the same way, in the Monitor format
        async with session.get(lst.url + "/nowhere", headers=EVIL) as resp:
            check_fail(resp.status, await resp.json(), 403)
        async with session.get(lst.url + "/api/health", headers={"Origin": "null"}) as resp:
            check_fail(resp.status, await resp.json(), 403)


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "localhost.evil.example:{port}",
                                  "127.0.0.1.evil.example:{port}"])
async def test_dns_rebinding_host_is_refused(scripted: ScriptedEngine, tmp_path: Path,
                                             session: aiohttp.ClientSession, host: str) -> None:
    async with running(scripted, make_config(tmp_path)) as lst:
        for port in (lst.port, lst.ws_port):
            headers = {"Host": host.format(port=port)}
            async with session.get(f"http://127.0.0.1:{port}/ws", headers=headers) as resp:
                assert "host" in check_fail(resp.status, await resp.json(), 403).lower()
        async with session.get(lst.url + "/api/health", headers={"Host": host.format(port=lst.port)}) as resp:
            check_fail(resp.status, await resp.json(), 403)
        async with session.post(lst.url + "/api/executions", json={"name": "c", "command": "true"},
                                headers={"Host": host.format(port=lst.port)}) as resp:
            check_fail(resp.status, await resp.json(), 403)
        for url in (lst.ws_url, lst.url + "/ws"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(url, headers={"Host": host.format(port=lst.port)})
            assert info.value.status == 403


async def test_the_listeners_own_names_and_configured_ones_are_served(scripted: ScriptedEngine, tmp_path: Path,
                                                                       session: aiohttp.ClientSession) -> None:
    async with running(scripted, make_config(tmp_path, allowed_hosts=("stepflow.internal",))) as lst:
        # any port: an `ssh -L 9000:localhost:8080` tunnel sends Host localhost:9000
        for host in (f"127.0.0.1:{lst.port}", f"localhost:{lst.port}", "LOCALHOST", f"[::1]:{lst.port}",
                     "localhost:9000", "stepflow.internal", f"stepflow.internal:{lst.port}"):
            async with session.get(lst.url + "/api/health", headers={"Host": host}) as resp:
                check_ok(resp.status, await resp.json())
        async with session.get(lst.url + "/api/health", headers={"Host": "other.internal"}) as resp:
            check_fail(resp.status, await resp.json(), 403)


async def test_a_wildcard_bind_with_auth_answers_any_host(scripted: ScriptedEngine, tmp_path: Path,
                                                          session: aiohttp.ClientSession) -> None:
    token = {"Authorization": f"Bearer {create_token(tmp_path)}"}
    async with running(scripted, make_config(tmp_path, host="0.0.0.0", auth_enabled=True)) as lst:
        url = f"http://127.0.0.1:{lst.port}/api/health"
        async with session.get(url, headers={**token, "Host": f"build-box.example:{lst.port}"}) as resp:
            check_ok(resp.status, await resp.json())
        # the Origin check stays: a page elsewhere cannot use a token it has no way to read anyway
        async with session.get(url, headers={**token, **EVIL}) as resp:
            check_fail(resp.status, await resp.json(), 403)


async def test_a_foreign_page_cannot_open_the_websocket(scripted: ScriptedEngine, tmp_path: Path,
                                                        session: aiohttp.ClientSession) -> None:
    async with running(scripted, make_config(tmp_path)) as lst:
        assert lst.ws_url is not None
        for url in (lst.ws_url, lst.url + "/ws"):
            for origin in ("http://evil.example", "null", f"http://evil.example:{lst.port}"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                    await session.ws_connect(url, headers={"Origin": origin})
                assert info.value.status == 403, (url, origin)
            # no Origin (a program) and the listener's own origins still connect
            port = int(url.split(":")[2].split("/")[0])
            for headers in ({}, {"Origin": f"http://127.0.0.1:{port}"}, {"Origin": f"http://localhost:{port}"}):
                async with session.ws_connect(url, headers=headers) as ws:
                    assert (await receive(ws))["type"] == "connection_established"


async def test_same_origin_and_origin_less_requests_work(engine: Any, tmp_path: Path,
                                                         session: aiohttp.ClientSession) -> None:
    async with running(engine, make_config(tmp_path)) as lst:
        for headers in ({}, {"Origin": lst.url}, {"Origin": f"http://localhost:{lst.port}"},
                        {"Origin": f"http://[::1]:{lst.port}"},
                        # a page on a tunnel to the listener: same origin as the Host it asks
                        {"Origin": "http://localhost:9000", "Host": "localhost:9000"}):
            async with session.post(lst.url + "/api/executions", json={"name": "n", "command": "true"},
                                    headers=headers) as resp:
                check_ok(resp.status, await resp.json(), expect=201)
            async with session.get(lst.url + "/api/executions", headers=headers) as resp:
                check_ok(resp.status, await resp.json())
        # the same port on another name, or another port on a loopback name, is another origin
        for origin in ("http://localhost:9000", f"http://localhost:{lst.port + 1}", f"https://evil.example:{lst.port}"):
            async with session.get(lst.url + "/api/health", headers={"Origin": origin}) as resp:
                check_fail(resp.status, await resp.json(), 403)


async def test_a_configured_cors_origin_works_with_its_preflight(engine: Any, tmp_path: Path,
                                                                 session: aiohttp.ClientSession) -> None:
    ui = {"Origin": "http://ui.example:3000"}
    async with running(engine, make_config(tmp_path, cors_origins=("http://ui.example:3000",))) as lst:
        await check_preflight(session, lst.url, "http://ui.example:3000", "Content-Type")
        async with session.post(lst.url + "/api/executions", json={"name": "ui", "command": "true"},
                                headers=ui) as resp:
            check_ok(resp.status, await resp.json(), expect=201)
            assert resp.headers["Access-Control-Allow-Origin"] == "http://ui.example:3000"
        evil_preflight = {**preflight_headers("http://ui.example:3000", "Content-Type"), **EVIL}
        async with session.options(lst.url + "/api/executions", headers=evil_preflight) as resp:
            assert resp.status == 403 and "Access-Control-Allow-Origin" not in resp.headers
        async with session.ws_connect(lst.url + "/ws", headers=ui) as ws:
            assert (await receive(ws))["type"] == "connection_established"
    async with running(engine, make_config(tmp_path, cors_origins=("*",))) as lst:
        async with session.get(lst.url + "/api/health", headers=EVIL) as resp:
            check_ok(resp.status, await resp.json())
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
        async with session.get(lst.url + "/api/health", headers={"Origin": "null"}) as resp:
            check_fail(resp.status, await resp.json(), 403)


async def test_each_route_takes_the_content_type_it_documents(scripted: ScriptedEngine, tmp_path: Path,
                                                              session: aiohttp.ClientSession) -> None:
    async with running(scripted, make_config(tmp_path)) as lst:
        async with session.post(lst.url + "/api/executions", json={"name": "n", "command": "true"}) as resp:
            execution_id = check_ok(resp.status, await resp.json(), expect=201)["execution_id"]
        form = aiohttp.FormData()
        form.add_field("execution_id", execution_id)
        form.add_field("name", "report")
        form.add_field("file", b"hello", filename="report.txt", content_type="text/plain")
        async with session.post(lst.url + "/api/artifacts", data=form) as resp:  # documented multipart
            check_ok(resp.status, await resp.json(), expect=201)
        async with session.post(lst.url + "/api/artifacts", json={"execution_id": execution_id}) as resp:
            assert "multipart/form-data" in check_fail(resp.status, await resp.json(), 415)
        form = aiohttp.FormData()
        form.add_field("name", "n")
        form.add_field("command", "true")
        form.add_field("file", b"x", filename="x")  # forces multipart/form-data
        async with session.post(lst.url + "/api/executions", data=form) as resp:
            check_fail(resp.status, await resp.json(), 415)
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/octet-stream"):
            async with session.post(f"{lst.url}/api/executions/{execution_id}/rerun", data=b"{}",
                                    headers={"Content-Type": ctype}) as resp:
                check_fail(resp.status, await resp.json(), 415)
        # no body, no content type: the routes that take none (cancel) are unaffected
        async with session.post(f"{lst.url}/api/executions/{execution_id}/cancel") as resp:
            assert resp.status != 415
        async with session.post(lst.url + "/api/executions", data=b'{"name": "n", "command": "true"}',
                                headers={"Content-Type": "application/json; charset=utf-8"}) as resp:
            check_ok(resp.status, await resp.json(), expect=201)

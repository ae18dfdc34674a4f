"""Every REST route of the StepFlow Monitor API, against a real listener and client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from api_compat import ApiListener
from api_compat.monitor import schemas as s
from tests.api.helpers import check_fail, check_ok, finish

pytestmark = pytest.mark.timeout(60)


async def create(api: Any, command: str = "echo hello", **extra: Any) -> str:
    status, body = await api("POST", "/api/executions", json={"name": "t", "command": command, **extra})
    data = check_ok(status, body, s.ExecutionCreated, expect=201)
    return data["execution_id"]


@pytest.mark.xdist_group("measured")  # timed or measured: one at a time (see pyproject.toml)
async def test_create_returns_at_once_with_pending(api: Any, engine: Any) -> None:
    started = time.monotonic()
    status, body = await api("POST", "/api/executions", json={
        "name": "Slow", "command": "sleep 3", "working_directory": "/tmp",
        "environment": {"MODEL_TYPE": "x"}, "tags": ["ml", "training"], "metadata": {"project": "p"},
    })
    assert time.monotonic() - started < 1.5
    data = check_ok(status, body, s.ExecutionCreated, expect=201)
    assert data["status"] == "pending"
    assert data["created_at"].endswith("Z")
    status, body = await api("GET", f"/api/executions/{data['execution_id']}")
    detail = check_ok(status, body, s.ExecutionDetail)
    ex = detail["execution"]
    assert ex["name"] == "Slow" and ex["command"] == "sleep 3" and ex["working_directory"] == "/tmp"
    assert ex["tags"] == ["ml", "training"] and ex["metadata"]["project"] == "p"
    assert ex["environment"] == {"MODEL_TYPE": "x"}
    await api("POST", f"/api/executions/{data['execution_id']}/cancel")
    await finish(engine, data["execution_id"])


async def test_list_filters_and_pages(api: Any, engine: Any) -> None:
    ids = [await create(api, "true", user="alice") for _ in range(3)]
    ids.append(await create(api, "true", user="bob"))
    for i in ids:
        await finish(engine, i)
    data = check_ok(*await api("GET", "/api/executions?limit=2&offset=0"), s.ExecutionList)
    assert len(data["executions"]) == 2 and data["total_count"] == 4 and data["has_more"] is True
    data = check_ok(*await api("GET", "/api/executions?limit=2&offset=2"), s.ExecutionList)
    assert len(data["executions"]) == 2 and data["has_more"] is False
    data = check_ok(*await api("GET", "/api/executions", params={"user": "alice"}), s.ExecutionList)
    assert data["total_count"] == 3 and {e["user"] for e in data["executions"]} == {"alice"}
    data = check_ok(*await api("GET", "/api/executions?status=completed&limit=1000"), s.ExecutionList)
    assert data["total_count"] == 4
    data = check_ok(*await api("GET", "/api/executions?status=running"), s.ExecutionList)
    assert data["total_count"] == 0 and data["executions"] == []


async def test_delete_of_a_finished_execution(api: Any, engine: Any) -> None:
    ex_id = await create(api, "sleep 5")
    check_ok(*await api("POST", f"/api/executions/{ex_id}/cancel"), s.Message)
    await finish(engine, ex_id)
    data = check_ok(*await api("DELETE", f"/api/executions/{ex_id}"), s.Message)
    assert data["message"] == "Execution deleted successfully"
    check_fail(*await api("GET", f"/api/executions/{ex_id}"), 404)
    check_fail(*await api("DELETE", f"/api/executions/{ex_id}"), 404)


async def test_rerun_and_logs(api: Any, engine: Any) -> None:
    ex_id = await create(api, "echo one; echo two >&2")
    await finish(engine, ex_id)
    data = check_ok(*await api("POST", f"/api/executions/{ex_id}/rerun"), s.ExecutionCreated, expect=201)
    assert data["execution_id"] != ex_id
    await finish(engine, data["execution_id"])
    if hasattr(engine, "wait"):  # the scripted engine runs nothing
        logs = check_ok(*await api("GET", f"/api/executions/{ex_id}/logs"), s.LogLines)
        assert [(ln["content"], ln["level"]) for ln in logs["lines"]] == [("one", "info"), ("two", "error")]
        logs = check_ok(*await api("GET", f"/api/executions/{ex_id}/logs?after_seq=0&limit=5"), s.LogLines)
        assert [ln["seq"] for ln in logs["lines"]] == [1]
        count = check_ok(*await api("GET", f"/api/executions/{ex_id}/logs/count"), s.LogCount)
        assert count["count"] == 2
    check_fail(*await api("GET", "/api/executions/nope/logs"), 404)
    check_fail(*await api("POST", "/api/executions/nope/rerun"), 404)
    check_fail(*await api("POST", "/api/executions/nope/cancel"), 404)
    error = check_fail(*await api("POST", f"/api/executions/{ex_id}/cancel"), 409)
    assert "not running" in error


async def test_workflow_route(api: Any, engine: Any) -> None:
    text = "name: wf\nsteps:\n  - name: hello\n    run: echo hi\n"
    data = check_ok(*await api("POST", "/api/workflows", json={"text": text}), s.ExecutionCreated, expect=201)
    await finish(engine, data["execution_id"])
    check_fail(*await api("POST", "/api/workflows", json={}), 400)


async def test_artifacts_upload_list_detail_download_delete(api: Any, engine: Any,
                                                            session: aiohttp.ClientSession,
                                                            listener: ApiListener) -> None:
    ex_id = await create(api, "true")
    await finish(engine, ex_id)
    form = aiohttp.FormData()
    form.add_field("execution_id", ex_id)
    form.add_field("name", "Output Report")
    form.add_field("description", "Generated report")
    form.add_field("tags", "report")
    form.add_field("tags", "html")
    form.add_field("file", b"<h1>hi</h1>", filename="report.html", content_type="text/html")
    art = check_ok(*await api("POST", "/api/artifacts", data=form), s.ArtifactDetail, expect=201)["artifact"]
    assert art["name"] == "Output Report" and art["file_name"] == "report.html"
    assert art["file_size"] == 11 and art["mime_type"] == "text/html"
    assert art["artifact_type"] == "document" and art["tags"] == ["report", "html"]
    assert art["download_url"] == f"/api/artifacts/{art['id']}/download"

    form = aiohttp.FormData()
    form.add_field("execution_id", ex_id)
    form.add_field("name", "data")
    form.add_field("artifact_type", "data")
    form.add_field("tags", '["a", "b"]')
    form.add_field("file", b"x,y\n1,2\n", filename="t.csv")
    data_art = check_ok(*await api("POST", "/api/artifacts", data=form), s.ArtifactDetail, expect=201)["artifact"]
    assert data_art["tags"] == ["a", "b"] and data_art["artifact_type"] == "data"

    listing = check_ok(*await api("GET", f"/api/artifacts?execution_id={ex_id}"), s.ArtifactList)
    assert listing["total_count"] == 2 and not listing["has_more"]
    listing = check_ok(*await api("GET", f"/api/artifacts?execution_id={ex_id}&artifact_type=data"),
                       s.ArtifactList)
    assert [a["id"] for a in listing["artifacts"]] == [data_art["id"]]
    listing = check_ok(*await api("GET", "/api/artifacts?limit=1&offset=1"), s.ArtifactList)
    assert len(listing["artifacts"]) == 1
    detail = check_ok(*await api("GET", f"/api/artifacts/{art['id']}"), s.ArtifactDetail)
    assert detail["artifact"]["id"] == art["id"]
    exec_detail = check_ok(*await api("GET", f"/api/executions/{ex_id}"), s.ExecutionDetail)
    assert {a["id"] for a in exec_detail["artifacts"]} == {art["id"], data_art["id"]}

    async with session.get(listener.url + art["download_url"]) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert 'filename="report.html"' in resp.headers["Content-Disposition"]
        assert await resp.read() == b"<h1>hi</h1>"

    check_ok(*await api("DELETE", f"/api/artifacts/{art['id']}"), s.Message)
    check_fail(*await api("GET", f"/api/artifacts/{art['id']}"), 404)
    check_fail(*await api("GET", f"/api/artifacts/{art['id']}/download"), 404)
    check_fail(*await api("DELETE", f"/api/artifacts/{art['id']}"), 404)


async def test_health_routes(api: Any, engine: Any) -> None:
    ex_id = await create(api, "true")
    await finish(engine, ex_id)
    data = check_ok(*await api("GET", "/api/health"), s.Health)
    assert data["status"] == "healthy" and data["database"] == "connected"
    assert data["websocket"] == "running" and data["storage"] == "accessible"
    data = check_ok(*await api("GET", "/api/health/status"), s.HealthStatus)
    assert data["database"]["wal_mode"] is True and data["websocket"]["status"] == "running"
    assert len(data["system"]["load_average"]) == 3
    data = check_ok(*await api("GET", "/api/health/metrics"), s.Metrics)
    assert data["database"]["table_counts"]["executions"] == 1
    assert data["database"]["wal_mode"] == "wal"
    data = check_ok(*await api("GET", "/api/health/database"), s.DatabaseStats)
    assert data["total_executions"] == 1 and data["completed_executions"] == 1
    # RFC 3339 UTC with "Z", like every other timestamp (the store's text says "+00:00")
    created = check_ok(*await api("GET", f"/api/executions/{ex_id}"), s.ExecutionDetail)["execution"]["created_at"]
    assert data["oldest_execution"] == data["newest_execution"] == created
    assert created.endswith("Z")
    data = check_ok(*await api("POST", "/api/health/optimize"), s.OptimizeResult)
    assert data["status"] == "optimization_completed"
    assert any("ANALYZE" in op for op in data["operations_performed"])
    assert any("checkpoint" in op.lower() for op in data["operations_performed"])


async def test_head_answers_every_get_route_with_its_headers_and_no_body(
        api: Any, engine: Any, listener: ApiListener, session: aiohttp.ClientSession) -> None:
    ex_id = await create(api, "true")
    await finish(engine, ex_id)
    form = aiohttp.FormData()
    form.add_field("execution_id", ex_id)
    form.add_field("name", "Report")
    form.add_field("file", b"<p>hi</p>", filename="report.html")
    artifact = check_ok(*await api("POST", "/api/artifacts", data=form), expect=201)["artifact"]
    for path in ("/api/health", "/api/executions?limit=1", f"/api/executions/{ex_id}", "/api/openapi.json",
                 f"/api/artifacts/{artifact['id']}", "/api/health/metrics"):
        async with session.head(listener.url + path) as resp:
            assert resp.status == 200, path
            assert resp.headers["Content-Type"].startswith("application/json")
            assert await resp.read() == b""
    async with session.head(listener.url + artifact["download_url"]) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/html"
        assert resp.headers["Content-Length"] == "9" and "report.html" in resp.headers["Content-Disposition"]
    async with session.head(listener.url + "/api/executions/unknown") as resp:
        assert resp.status == 404
    async with session.head(listener.url + "/api/health/optimize") as resp:
        assert resp.status == 405  # a POST route: no HEAD


# -- bad input: the envelope with success false and a 4xx, never a 500, and the server keeps serving
@pytest.mark.parametrize(("method", "path", "kwargs", "expect", "needle"), [
    ("POST", "/api/executions", {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
     400, "not valid JSON"),
    ("POST", "/api/executions", {"data": b"", "headers": {"Content-Type": "application/json"}}, 400, "JSON"),
    # a body of the wrong shape: 400, the document's status for a bad request, the field named
    ("POST", "/api/executions", {"json": ["echo"]}, 400, "JSON object"),
    ("POST", "/api/executions", {"json": {"command": 5}}, 400, "command: Input should be a valid string"),
    ("POST", "/api/executions", {"json": {"command": "echo", "tags": "ml"}}, 400, "tags:"),
    ("POST", "/api/executions", {"json": {"command": "echo", "environment": {"A": 1}}}, 400, "environment.A:"),
    ("POST", "/api/executions", {"json": {"name": "no command"}}, 400, "command: Field required"),
    ("POST", "/api/executions", {"json": {"command": "echo", "timeout": 0}}, 400, "timeout: Input should be greater than 0"),
    ("POST", "/api/executions", {"json": {"command": "echo", "timeout": "10"}}, 400, "timeout:"),
    ("POST", "/api/executions", {"json": {"command": "echo", "target": "mars"}}, 400, "unknown target"),
    # what no process can be started with: refused at once, not a failed run ("internal error")
    ("POST", "/api/executions", {"json": {"command": "echo a\x00b"}}, 400, "the command contains a NUL"),
    ("POST", "/api/executions", {"json": {"command": "echo", "working_directory": "/tm\x00p"}}, 400,
     "the working directory contains a NUL"),
    ("POST", "/api/executions", {"json": {"command": "echo", "environment": {"A=B": "1"}}}, 400,
     "invalid environment variable name 'A=B'"),
    ("POST", "/api/executions", {"json": {"command": "echo", "environment": {"": "1"}}}, 400,
     "invalid environment variable name ''"),
    ("POST", "/api/executions", {"json": {"command": "echo", "environment": {"A": "b\x00"}}}, 400,
     "the value of A contains a NUL"),
    ("GET", "/api/executions?limit=5000", {}, 400, "limit"),
    ("GET", "/api/executions?limit=ten", {}, 400, "limit"),
    ("GET", "/api/executions?offset=-1", {}, 400, "offset"),
    ("GET", "/api/executions?status=sleeping", {}, 400, "status"),
    ("GET", "/api/artifacts?limit=5000", {}, 400, "limit"),
    # beyond SQLite's INTEGER: refused here, not an OverflowError (a 500) in the store
    ("GET", "/api/executions?offset=99999999999999999999999", {}, 400, "offset"),
    ("GET", "/api/artifacts?offset=99999999999999999999999", {}, 400, "offset"),
    ("GET", "/api/executions/x/logs?after_seq=99999999999999999999999", {}, 400, "after_seq"),
    ("GET", "/api/executions/x/logs?before_seq=-99999999999999999999999", {}, 400, "before_seq"),
    ("GET", "/api/executions/x/logs?offset=99999999999999999999999", {}, 400, "offset"),
    ("GET", "/api/artifacts?artifact_type=movie", {}, 400, "artifact_type"),
    ("GET", "/api/executions/00000000-0000-0000-0000-000000000000", {}, 404, "not found"),
    ("DELETE", "/api/executions/unknown", {}, 404, "unknown"),
    ("GET", "/api/artifacts/unknown", {}, 404, "not found"),
    ("GET", "/api/artifacts/unknown/download", {}, 404, "not found"),
    ("GET", "/api/nothing/here", {}, 404, "no route"),
    ("PUT", "/api/executions", {}, 405, "Not Allowed"),
    ("POST", "/api/executions/x/rerun", {"json": {"from_failed": "yes"}}, 400, "from_failed:"),
    ("POST", "/api/workflows", {"json": {"path": "a\x00b.yaml"}}, 400, "cannot read the file: embedded null byte"),
])
async def test_bad_input(api: Any, method: str, path: str, kwargs: dict, expect: int, needle: str) -> None:
    error = check_fail(*await api(method, path, **kwargs), expect)
    assert needle.lower() in error.lower()
    check_ok(*await api("GET", "/api/health"))


async def test_too_large_json_body(api: Any) -> None:
    check_fail(*await api("POST", "/api/executions", json={"command": "echo", "name": "x" * 2_000_000}), 413)
    check_ok(*await api("GET", "/api/health"))


def raw_multipart(fields: dict[str, str], file_name: str, content: bytes) -> tuple[bytes, str]:
    """A multipart body written by hand, so the file name reaches the server exactly as given."""
    boundary = "----stepflowtestboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("file_name", ["../../x", "a/b.txt", "..\\x", "..", "/etc/passwd"])
async def test_upload_with_a_path_for_a_name_is_refused(api: Any, engine: Any, file_name: str) -> None:
    ex_id = await create(api, "true")
    await finish(engine, ex_id)
    body, content_type = raw_multipart({"execution_id": ex_id, "name": "evil"}, file_name, b"boom")
    error = check_fail(*await api("POST", "/api/artifacts", data=body,
                                  headers={"Content-Type": content_type}), 400)
    assert "file name" in error
    listing = check_ok(*await api("GET", f"/api/artifacts?execution_id={ex_id}"))
    assert listing["total_count"] == 0


@pytest.mark.parametrize("body", [
    b"garbage",  # no starting boundary
    b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nabc',  # cut short
    b'--xx\r\nContent-Disposition: form-data; name="execution_id"\r\n\r\nabc',  # cut short in a field
    b"--xx\r\nGarbage header line\r\n\r\nfoo\r\n--xx--\r\n",  # a part header that is no header
])
async def test_a_broken_multipart_body_is_a_400(api: Any, body: bytes) -> None:
    error = check_fail(*await api("POST", "/api/artifacts", data=body,
                                  headers={"Content-Type": "multipart/form-data; boundary=xx"}), 400)
    assert "multipart body cannot be read" in error
    check_ok(*await api("GET", "/api/health"))


async def test_upload_bad_forms(api: Any, engine: Any) -> None:
    ex_id = await create(api, "true")
    await finish(engine, ex_id)

    def form(**fields: str) -> aiohttp.FormData:
        f = aiohttp.FormData()
        for k, v in fields.items():
            f.add_field(k, v)
        f.add_field("file", b"data", filename="f.txt")
        return f

    assert "execution_id: Field required" in check_fail(*await api("POST", "/api/artifacts", data=form(name="n")), 400)
    assert "name: Field required" in check_fail(*await api("POST", "/api/artifacts", data=form(execution_id=ex_id)), 400)
    check_fail(*await api("POST", "/api/artifacts", data=form(execution_id=ex_id, name="n", colour="red")), 400)
    check_fail(*await api("POST", "/api/artifacts", data=form(execution_id=ex_id, name="n",
                                                                    artifact_type="movie")), 400)
    check_fail(*await api("POST", "/api/artifacts", data=form(execution_id="nope", name="n")), 404)
    no_file = aiohttp.FormData()
    no_file.add_field("execution_id", ex_id)
    no_file.add_field("name", "n")
    no_file.add_field("x", b"\x00", filename="x")  # forces multipart
    check_fail(*await api("POST", "/api/artifacts", data=no_file), 400)
    check_fail(*await api("POST", "/api/artifacts", json={"execution_id": ex_id}), 415)  # not multipart


async def test_oversized_upload_is_refused_and_the_server_keeps_serving(engine: Any, tmp_path,
                                                                       session: aiohttp.ClientSession) -> None:
    from tests.api.conftest import make_config, running

    async with running(engine, make_config(tmp_path, max_upload_bytes=1000)) as lst:
        async with session.post(lst.url + "/api/executions", json={"command": "true"}) as resp:
            ex_id = (await resp.json())["data"]["execution_id"]
        await finish(engine, ex_id)
        for chunked in (False, True):
            form = aiohttp.FormData()
            form.add_field("execution_id", ex_id)
            form.add_field("name", "big")
            payload = b"x" * 5000 if not chunked else (b"x" * 500 for _ in range(10))
            if chunked:
                async def gen(parts=payload):  # no Content-Length: the cap is checked while reading
                    for part in parts:
                        yield part
                form.add_field("file", gen(), filename="big.bin")
            else:
                form.add_field("file", payload, filename="big.bin")
            async with session.post(lst.url + "/api/artifacts", data=form) as resp:
                check_fail(resp.status, await resp.json(), 413)
        async with session.get(lst.url + "/api/health") as resp:
            assert resp.status == 200
        async with session.get(lst.url + f"/api/artifacts?execution_id={ex_id}") as resp:
            assert (await resp.json())["data"]["total_count"] == 0


async def test_concurrent_requests_while_an_execution_runs(api: Any, engine: Any) -> None:
    ex_id = await create(api, "for i in $(seq 1 50); do echo line $i; done")
    results = await asyncio.gather(*(api("GET", f"/api/executions/{ex_id}") for _ in range(20)))
    assert all(status == 200 for status, _ in results)
    await finish(engine, ex_id)

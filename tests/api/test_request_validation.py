"""Issue 12 items 1 and 2: a request body that does not fit is a 400 (the document's status for a bad
request) with the envelope and the offending field named; `timeout` on POST /api/executions is a
real execution timeout (the reference's web UI sends it); any other unknown field is ignored and
named in the envelope's `warnings`."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from api_compat.monitor import schemas as s
from tests.api.helpers import check_fail, check_ok, finish
from tests.engine_helpers import submit_command


async def test_a_body_of_the_wrong_shape_is_a_400_naming_the_field(api: Any, engine: Any) -> None:
    error = check_fail(*await api("POST", "/api/executions", json={"command": "echo", "name": 5}), 400)
    assert error.startswith("name: "), error
    error = check_fail(*await api("POST", "/api/executions", json={"name": "no command"}), 400)
    assert error == "command: Field required"
    error = check_fail(*await api("POST", "/api/workflows", json={"text": "name: x", "targets": "local"}), 400)
    assert error.startswith("targets: "), error
    error = check_fail(*await api("POST", "/api/executions/x/rerun", json={"from_failed": "yes"}), 400)
    assert error.startswith("from_failed: "), error
    # a form upload too
    form = aiohttp.FormData()
    form.add_field("name", "n")
    form.add_field("file", b"data", filename="f.txt")
    assert check_fail(*await api("POST", "/api/artifacts", data=form), 400) == "execution_id: Field required"


async def test_unknown_fields_are_ignored_and_named_in_warnings(api: Any, engine: Any) -> None:
    status, body = await api("POST", "/api/executions", json={"command": "echo hi", "foo": 1, "bar": None})
    data = check_ok(status, body, s.ExecutionCreated, expect=201)
    assert body["warnings"] == ["unknown field 'foo' ignored", "unknown field 'bar' ignored"]
    execution = await finish(engine, data["execution_id"])
    assert execution.status.value == "completed"
    assert "foo" not in execution.metadata
    # no warnings: no `warnings` field at all
    status, body = await api("POST", "/api/executions", json={"command": "echo hi"})
    check_ok(status, body, s.ExecutionCreated, expect=201)
    assert "warnings" not in body
    await finish(engine, body["data"]["execution_id"])
    # a workflow and a rerun the same
    status, body = await api("POST", "/api/workflows",
                             json={"text": "name: wf\nsteps:\n  - name: a\n    run: echo a\n", "colour": "red"})
    check_ok(status, body, s.ExecutionCreated, expect=201)
    assert body["warnings"] == ["unknown field 'colour' ignored"]
    await finish(engine, body["data"]["execution_id"])
    status, body = await api("POST", f"/api/executions/{data['execution_id']}/rerun", json={"why": "again"})
    check_ok(status, body, s.ExecutionCreated, expect=201)
    assert body["warnings"] == ["unknown field 'why' ignored"]
    await finish(engine, body["data"]["execution_id"])


async def test_timeout_stops_the_command_and_fails_it_with_reason_timeout(api: Any, engine: Any) -> None:
    started = time.monotonic()
    # the reference web UI's form: name, command, working_directory, timeout
    status, body = await api("POST", "/api/executions",
                             json={"name": "slow", "command": "sleep 30", "timeout": 1})
    data = check_ok(status, body, s.ExecutionCreated, expect=201)
    assert "warnings" not in body
    await finish(engine, data["execution_id"], within=15)
    took = time.monotonic() - started
    shown = check_ok(*await api("GET", f"/api/executions/{data['execution_id']}"), s.ExecutionDetail)
    assert shown["execution"]["status"] == "failed"
    assert shown["execution"]["abort_reason"] == "timeout"
    assert took < 10, took  # 1 s, then SIGTERM: `sleep` ends at once
    print(f"sleep 30 with timeout 1: failed (timeout) after {took:.2f} s")
    lines = check_ok(*await api("GET", f"/api/executions/{data['execution_id']}/logs"))["lines"]
    assert any("timed out after 1" in line["content"] for line in lines), lines

    # a rerun runs with the same timeout
    status, body = await api("POST", f"/api/executions/{data['execution_id']}/rerun")
    again = check_ok(status, body, s.ExecutionCreated, expect=201)["execution_id"]
    rerun = await finish(engine, again, within=15)
    assert rerun.status.value == "failed" and rerun.abort_reason is not None
    assert rerun.abort_reason.value == "timeout"


async def test_a_timeout_longer_than_the_command_changes_nothing(api: Any, engine: Any) -> None:
    status, body = await api("POST", "/api/executions", json={"command": "echo done", "timeout": 30.5})
    data = check_ok(status, body, s.ExecutionCreated, expect=201)
    execution = await finish(engine, data["execution_id"])
    assert execution.status.value == "completed" and execution.exit_code == 0


async def test_the_openapi_document_says_400_and_documents_timeout_and_warnings(api: Any) -> None:
    status, doc = await api("GET", "/api/openapi.json")
    assert status == 200
    for path, ops in doc["paths"].items():
        if path.startswith(("/api/executions", "/api/workflows", "/api/artifacts")):
            for method, op in ops.items():
                if any(tag.startswith("OpsConductor") for tag in op.get("tags", ())):
                    continue  # OpsConductor's /api/executions/search, /bulk…: its document answers 422
                assert "422" not in op["responses"], (method, path)
    create = doc["paths"]["/api/executions"]["post"]
    assert "400" in create["responses"]
    body_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    body_schema = doc["components"]["schemas"][body_ref]
    assert body_schema.get("additionalProperties") is not False  # unknown fields are accepted
    assert body_schema["properties"]["timeout"]["anyOf"][0] == {"exclusiveMinimum": 0.0, "type": "number"}
    created_ref = create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    envelope = doc["components"]["schemas"][created_ref]
    assert envelope["properties"]["warnings"]["items"] == {"type": "string"}
    assert "warnings" not in envelope.get("required", [])


async def test_the_remote_client_passes_timeout_through(listener: Any, engine: Any) -> None:
    from api_compat.monitor.client import RemoteEngine

    async with RemoteEngine(listener.url, max_reconnect_delay=0.2) as client:
        created = await submit_command(client, "sleep 30", timeout=0.5)
    execution = await finish(engine, created.id, within=15)
    assert execution.status.value == "failed" and execution.abort_reason is not None
    assert execution.abort_reason.value == "timeout"

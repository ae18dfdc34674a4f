"""Issue 9 item 8: no input a client sends can make the API answer 500. Bodies nested past the
interpreter's recursion limit, numbers past Python's int-from-string limit, JSON's forbidden
constants, and the same inside a workflow's YAML text or a form field: each is a 400 (the
message naming the field when it is a field that is not what it must be) in Monitor's error envelope, and the server goes on serving."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from api_compat import ApiListener
from api_compat.request_parsing import MAX_JSON_DEPTH, InvalidJson, parse_json
from tests.api.helpers import check_fail, check_ok, finish, receive

pytestmark = pytest.mark.timeout(60)

JSON = {"Content-Type": "application/json"}
DEEP = 100_000


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("body", [
    b"[" * DEEP,
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * DEEP,
    b'{"command":"echo","metadata":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
    b'{"command":"echo","metadata":{"n":' + b"7" * 5_000 + b"}}",
    b'{"command":"echo","metadata":{"n":-' + b"7" * 5_000 + b"}}",
], ids=["open-arrays", "closed-arrays", "open-objects", "deep-metadata", "5000-digits", "minus-5000-digits"])
async def test_a_body_too_deep_or_too_long_to_parse_is_a_400(api: Any, body: bytes) -> None:
    assert len(body) < 1024 * 1024  # under the body size limit: the parser meets it, not the cap
    error = check_fail(*await api("POST", "/api/executions", data=body, headers=JSON), 400)
    assert error.startswith("the request body is not valid JSON: ")
    check_ok(*await api("GET", "/api/health"))


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
async def test_numbers_json_does_not_have_are_refused(api: Any, constant: bytes) -> None:
    # accepted, they came back in the execution's `metadata` as `NaN`: a response no client can parse
    body = b'{"command":"echo","metadata":{"x":' + constant + b"}}"
    error = check_fail(*await api("POST", "/api/executions", data=body, headers=JSON), 400)
    assert "not valid JSON" in error


async def test_nesting_up_to_the_limit_is_accepted_and_past_it_refused(api: Any, engine: Any) -> None:
    inside = MAX_JSON_DEPTH - 2  # the body object and `metadata` are two of the levels
    status, body = await api("POST", "/api/executions", json={"command": "true", "metadata": {"x": nested(inside)}})
    data = check_ok(status, body, expect=201)
    await finish(engine, data["execution_id"])
    detail = check_ok(*await api("GET", f"/api/executions/{data['execution_id']}"))
    assert detail["execution"]["metadata"] == {"x": nested(inside)}
    error = check_fail(*await api("POST", "/api/executions",
                                  json={"command": "true", "metadata": {"x": nested(inside + 1)}}), 400)
    assert f"deeper than {MAX_JSON_DEPTH} levels" in error


async def test_an_optional_body_is_parsed_the_same_way(api: Any) -> None:
    error = check_fail(*await api("POST", "/api/executions/x/rerun", data=b"[" * DEEP, headers=JSON), 400)
    assert "not valid JSON" in error
    check_fail(*await api("POST", "/api/executions/x/rerun",
                          data=b'{"from_failed":' + b"1" * 5000 + b"}", headers=JSON), 400)


@pytest.mark.parametrize("text", [
    "steps: " + "[" * 50_000,
    "steps: " + "[" * 50_000 + "]" * 50_000,
    "steps:\n" + "".join(" " * i + "- \n" for i in range(1_200)),
    "steps:\n  - name: a\n    run: echo\n    timeout: " + "9" * 5_000 + "\n",
    "x: " + "1" * 5_000 + "\nsteps: [{name: a, run: echo}]\n",
    # YAML's hexadecimal integers have no digit limit: one too large for a float
    "steps:\n  - name: a\n    run: echo\n    timeout: 0x" + "f" * 10_000 + "\n",
    "name: 0x" + "f" * 10_000 + "\nsteps: [{name: a, run: echo}]\n",
], ids=["open-flow", "closed-flow", "block-nesting", "long-timeout", "long-int", "huge-hex-timeout",
        "huge-hex-name"])
async def test_a_workflow_text_too_deep_or_too_long_is_a_400(api: Any, text: str) -> None:
    check_fail(*await api("POST", "/api/workflows", json={"text": text}), 400)
    check_ok(*await api("GET", "/api/health"))


@pytest.mark.parametrize("query", [
    "limit=" + "9" * 5_000, "offset=" + "9" * 5_000, "offset=-" + "9" * 5_000, "limit=1e400",
    "offset=1e400", "limit=-1e400", "limit=NaN", "limit=Infinity", "limit=0x10",
])
async def test_huge_numbers_in_query_parameters_are_a_400(api: Any, query: str) -> None:
    name = query.split("=")[0]
    for path in ("/api/executions", "/api/artifacts"):
        error = check_fail(*await api("GET", f"{path}?{query}"), 400)
        assert error.startswith(f"invalid query parameters: {name}:")
    for name in ("after_seq", "before_seq", "offset", "limit"):
        value = query.split("=", 1)[1]
        error = check_fail(*await api("GET", f"/api/executions/x/logs?{name}={value}"), 400)
        assert error.startswith(f"invalid query parameters: {name}:")


async def test_json_in_an_upload_form_field_is_parsed_the_same_way(api: Any, engine: Any) -> None:
    status, body = await api("POST", "/api/executions", json={"command": "true"})
    ex_id = check_ok(status, body, expect=201)["execution_id"]
    await finish(engine, ex_id)
    for tags in ("[" * 60_000, "[" + "1" * 5_000 + "]", "[NaN]"):
        form = aiohttp.FormData()
        form.add_field("execution_id", ex_id)
        form.add_field("name", "n")
        form.add_field("tags", tags)
        form.add_field("file", b"data", filename="f.txt")
        error = check_fail(*await api("POST", "/api/artifacts", data=form), 400)
        assert error.startswith("tags: not a valid JSON array")


async def test_a_websocket_message_too_deep_gets_an_error_and_the_socket_stays(
        listener: ApiListener, session: aiohttp.ClientSession) -> None:
    assert listener.ws_url is not None
    async with session.ws_connect(listener.ws_url) as ws:
        assert (await receive(ws))["type"] == "connection_established"
        for raw in ("[" * DEEP, '{"type":"ping","n":' + "1" * 5_000 + "}", '{"type":"ping","n":NaN}'):
            await ws.send_str(raw)
            reply = await receive(ws)
            assert reply["type"] == "error", reply
            assert reply["data"]["error_code"] == "INVALID_MESSAGE", reply
        await ws.send_str(json.dumps({"type": "ping"}))
        assert (await receive(ws))["type"] == "pong"


def test_parse_json_refuses_with_its_one_error_type() -> None:
    for text in ("[" * DEEP, "1" * 5_000, "NaN", "1e400", "{", b"\xff", json.dumps(nested(MAX_JSON_DEPTH + 1))):
        with pytest.raises(InvalidJson):
            parse_json(text)
    assert parse_json(json.dumps(nested(MAX_JSON_DEPTH - 1))) == nested(MAX_JSON_DEPTH - 1)
    assert parse_json(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}


@pytest.mark.parametrize("path,content_type", [
    ("/api/executions", "application/json"),
    ("/api/executions/x/rerun", "application/json"),
    ("/api/artifacts", "multipart/form-data; boundary=xx"),
])
async def test_a_body_whose_content_encoding_does_not_decode_is_a_400(api: Any, path: str,
                                                                     content_type: str) -> None:
    error = check_fail(*await api("POST", path, data=b"this is not gzip",
                                  headers={"Content-Type": content_type, "Content-Encoding": "gzip"}), 400)
    assert "cannot be read" in error
    check_ok(*await api("GET", "/api/health"))


async def test_a_gzipped_json_body_is_read(api: Any, engine: Any) -> None:
    body = gzip.compress(json.dumps({"command": "true", "name": "zipped"}).encode())
    data = check_ok(*await api("POST", "/api/executions", data=body,
                               headers={**JSON, "Content-Encoding": "gzip"}), expect=201)
    await finish(engine, data["execution_id"])


async def test_an_upload_streaming_form_fields_without_end_is_refused(api: Any) -> None:
    # no Content-Length (chunked): the size is only known while reading, field after field
    async def fields() -> AsyncIterator[bytes]:
        for i in range(200):
            yield (f'--xx\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n'.encode()
                   + b"x" * 60_000 + b"\r\n")
        yield b"--xx--\r\n"

    error = check_fail(*await api("POST", "/api/artifacts", data=fields(),
                                  headers={"Content-Type": "multipart/form-data; boundary=xx"}), 413)
    assert "fields are larger than the limit" in error
    check_ok(*await api("GET", "/api/health"))

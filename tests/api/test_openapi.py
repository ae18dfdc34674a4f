"""The OpenAPI document lists every registered route, and is itself a valid-looking document."""

from __future__ import annotations

from typing import Any

from api_compat import ApiListener
from tests.api.helpers import check_fail, check_ok


async def test_every_registered_route_is_in_the_document(api: Any, listener: ApiListener) -> None:
    status, doc = await api("GET", "/api/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    assert listener.app is not None
    registered = {
        (route.method.lower(), route.resource.canonical)
        for route in listener.app.router.routes()
        if route.method != "HEAD"
    }
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert registered <= documented, registered - documented
    assert documented <= registered, documented - registered
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["responses"], (method, path)
            for response in op["responses"].values():
                for media in response.get("content", {}).values():
                    ref = media.get("schema", {}).get("$ref")
                    if ref:
                        assert ref.split("/")[-1] in doc["components"]["schemas"], ref


async def test_the_spec_routes_are_there(api: Any) -> None:
    _status, doc = await api("GET", "/api/openapi.json")
    for method, path in [
        ("get", "/api/executions"), ("post", "/api/executions"), ("get", "/api/executions/{execution_id}"),
        ("delete", "/api/executions/{execution_id}"), ("get", "/api/artifacts"), ("post", "/api/artifacts"),
        ("get", "/api/artifacts/{artifact_id}"), ("get", "/api/artifacts/{artifact_id}/download"),
        ("delete", "/api/artifacts/{artifact_id}"), ("get", "/api/health"), ("get", "/api/health/status"),
        ("get", "/api/health/metrics"), ("get", "/api/health/database"), ("post", "/api/health/optimize"),
    ]:
        assert method in doc["paths"][path]
    params = {p["name"] for p in doc["paths"]["/api/executions"]["get"]["parameters"]}
    assert {"limit", "offset", "status", "user"} <= params
    limit = next(p for p in doc["paths"]["/api/executions"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 1000


def _refs(node: Any, where: str = "#") -> list[tuple[str, str]]:
    """Every `$ref` in the document, with where it is."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                found.append((where, value))
            else:
                found.extend(_refs(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(_refs(value, f"{where}/{i}"))
    return found


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (no {part!r})"
        node = node[part]
    return node


async def test_every_reference_resolves_within_the_document(api: Any) -> None:
    _status, doc = await api("GET", "/api/openapi.json")
    refs = _refs(doc)
    assert refs
    for where, ref in refs:
        # schemas, and the rate-limit headers every limited route answers with
        assert ref.startswith(("#/components/schemas/", "#/components/headers/")), (where, ref)
        _resolve(doc, ref)
    assert "$defs" not in str(doc)
    # the enums of the query parameters are there, by reference
    status = next(p for p in doc["paths"]["/api/executions"]["get"]["parameters"] if p["name"] == "status")
    assert _resolve(doc, _refs(status)[0][1])["enum"] == ["pending", "running", "completed", "failed", "cancelled"]


def _op(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return doc["paths"][path][method]


def _body_schema(doc: dict[str, Any], method: str, path: str, media: str = "application/json") -> Any:
    schema = _op(doc, method, path)["requestBody"]["content"][media]["schema"]
    return _resolve(doc, schema["$ref"]) if "$ref" in schema else schema


async def test_the_document_says_what_the_handlers_refuse(api: Any) -> None:
    """What schemathesis found refused though documented as valid, or the other way round."""
    _status, doc = await api("GET", "/api/openapi.json")
    create = _body_schema(doc, "post", "/api/executions")["properties"]
    assert create["target"]["enum"] == ["local"]  # the engine's known targets (none configured here)
    assert create["environment"]["propertyNames"]["pattern"] == "^[A-Za-z_][A-Za-z0-9_]*$"
    check_fail(*await api("POST", "/api/executions", json={"command": "x", "environment": {"x-y": ""}}), 400)
    upload = _body_schema(doc, "post", "/api/artifacts", "multipart/form-data")
    assert upload["additionalProperties"] is False
    assert upload["properties"]["execution_id"]["minLength"] == 1 and upload["properties"]["name"]["minLength"] == 1
    workflow = _body_schema(doc, "post", "/api/workflows")
    assert [alt["required"] for alt in workflow["oneOf"]] == [["path"], ["text"]]
    check_fail(*await api("POST", "/api/workflows", json={"path": None, "text": None}), 400)
    download = _op(doc, "get", "/api/artifacts/{artifact_id}/download")["responses"]["200"]
    assert list(download["content"]) == ["*/*"]  # the artifact's own type (image/png, application/pdf…)
    # an unreadable body or query is a 400 wherever there is one; a too large body a 413
    assert {"400", "413", "415"} <= set(_op(doc, "post", "/api/executions/{execution_id}/rerun")["responses"])
    # the cross-site checks and the failed-auth limit answer on every route
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert {"401", "403", "429", "500"} <= set(op["responses"]), (method, path)
    assert "400" in _op(doc, "get", "/api/executions/{execution_id}/logs/count")["responses"]
    assert "400" in _op(doc, "get", "/ws")["responses"]  # a plain GET, no handshake


async def test_query_parameters_are_values_or_absent(api: Any) -> None:
    _status, doc = await api("GET", "/api/openapi.json")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for param in op["parameters"]:
                assert "null" not in str(param["schema"]), (method, path, param)
    step_id = next(p for p in _op(doc, "get", "/api/executions/{execution_id}/logs")["parameters"]
                   if p["name"] == "step_id")
    assert step_id["schema"] == {"type": "array", "items": {"type": "string"}} and step_id["explode"] is True
    # a parameter that takes one value, given twice, is refused (the first used to win silently)
    error = check_fail(*await api("GET", "/api/executions?offset=1&offset=2"), 400)
    assert error == "invalid query parameters: offset: given more than once"
    check_ok(*await api("GET", "/api/executions?offset=1"))

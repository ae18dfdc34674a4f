"""The OpenAPI document lists every registered route, and is itself a valid-looking document."""

from __future__ import annotations

from typing import Any

from api_compat import ApiListener


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
        assert ref.startswith("#/components/schemas/"), (where, ref)
        _resolve(doc, ref)
    assert "$defs" not in str(doc)
    # the enums of the query parameters are there, by reference
    status = next(p for p in doc["paths"]["/api/executions"]["get"]["parameters"] if p["name"] == "status")
    assert _resolve(doc, _refs(status)[0][1])["enum"] == ["pending", "running", "completed", "failed", "cancelled"]

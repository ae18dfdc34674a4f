"""`/api/openapi.json`: an OpenAPI 3.1 document built from the routes every surface registered."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaValue, models_json_schema

from api_compat.monitor.envelope import dumps
from api_compat.rate_limits import RateCategory
from api_compat.state import SURFACES
from api_compat.surface import RouteDoc, Surface

_REF = "#/components/schemas/{model}"
_STATUS_TEXT = {400: "Bad request",
                401: "Authentication required: the credential is missing, not valid, expired or revoked",
                403: "Refused origin or host", 404: "Not found", 409: "Conflict", 413: "Too large",
                415: "Wrong content type", 422: "Invalid body", 429: "Too many failed authentications",
                500: "Server error", 503: "Shutting down"}
_RATE_HEADERS = {
    "X-RateLimit-Limit": "Requests allowed in the moving window of this route's rate-limit category",
    "X-RateLimit-Remaining": "Requests left in the window after this one",
    "X-RateLimit-Reset": "When the window lets one more request in, as a Unix timestamp in seconds",
}
_RETRY_AFTER = {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}
_HEADER_REF = "#/components/headers/{name}"
#: the document, built on first request (the routes are frozen by then)
OPENAPI_CACHE = web.AppKey("openapi_cache", dict[str, str])


def _models(surfaces: list[Surface]) -> list[type[BaseModel]]:
    found: dict[type[BaseModel], None] = {}
    for s in surfaces:
        if s.error_model is not None:
            found[s.error_model] = None
        for doc in s.routes:
            for m in (doc.query, doc.body, doc.response):
                if isinstance(m, type) and issubclass(m, BaseModel):
                    found[s.envelope(m) if (m is doc.response and s.envelope) else m] = None
    return list(found)


def _hoist(schema: Any, components: dict[str, Any]) -> Any:
    """`schema` with the `$defs` pydantic nests in it moved to `components` and every `#/$defs/X`
    reference pointing there: a `$ref` in an OpenAPI document resolves against the whole document,
    where `#/$defs/...` names nothing."""
    if isinstance(schema, list):
        return [_hoist(item, components) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$defs":
            for name, definition in value.items():
                definition = _hoist(definition, components)
                if components.setdefault(name, definition) != definition:
                    raise ValueError(f"two different schemas are both named {name!r} in the OpenAPI document")
        elif key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = _REF.format(model=value.removeprefix("#/$defs/"))
        else:
            out[key] = _hoist(value, components)
    return out


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: a parameter is given or absent, never null (`X | None` fields)."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    kept = [o for o in options if o != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if len(kept) == 1:
        return {**rest, **kept[0]}
    return {**rest, "anyOf": kept}


def _parameters(doc: RouteDoc, components: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": doc.path_params.get(name, {"type": "string"})}
        for name in re.findall(r"{(\w+)", doc.path)
    ]
    if doc.query is not None:
        schema = _hoist(doc.query.model_json_schema(ref_template=_REF), components)
        for name, prop in schema.get("properties", {}).items():
            prop = _without_null(dict(prop))
            prop.pop("title", None)
            if prop.get("default", ...) is None:
                del prop["default"]
            description = prop.pop("description", None)
            param = {"name": name, "in": "query", "required": name in schema.get("required", []),
                     "schema": prop}
            if prop.get("type") == "array":
                # `?step_id=a&step_id=b`: the form OpenAPI calls explode (the default, said here)
                param["explode"] = True
            if description:
                param["description"] = description
            params.append(param)
    return params


def build(app: web.Application) -> dict[str, Any]:
    surfaces = app[SURFACES]
    models = _models(surfaces)
    schemas, defs = models_json_schema([(m, "validation") for m in models], ref_template=_REF)
    # each model's `$ref` schema, keyed by the model alone: every one is asked for in validation mode
    refs: dict[type[BaseModel], JsonSchemaValue] = {m: schemas[(m, "validation")] for m in models}
    components: dict[str, Any] = {}
    _hoist(defs, components)
    paths: dict[str, dict[str, Any]] = {}
    for surface in surfaces:
        for doc in surface.routes:
            op: dict[str, Any] = {
                "summary": doc.summary,
                "tags": [f"{surface.title}: {doc.tag}"],
                "operationId": doc.operation_id or f"{surface.name}_{doc.method.lower()}_"
                + re.sub(r"\W+", "_", doc.path).strip("_"),
                "parameters": _parameters(doc, components),
            }
            if doc.description:
                op["description"] = doc.description
            if doc.body is not None:
                schema = refs[doc.body] if isinstance(doc.body, type) else _hoist(doc.body, components)
                op["requestBody"] = {"required": True, "content": {doc.body_content_type: {"schema": schema}}}
            responses: dict[str, Any] = {}
            if isinstance(doc.response, dict):
                responses[str(doc.status)] = _hoist(doc.response, components)
            elif doc.response is not None:
                model = surface.envelope(doc.response) if surface.envelope else doc.response
                responses[str(doc.status)] = {
                    "description": "Success",
                    "content": {"application/json": {"schema": refs[model]}},
                }
            else:
                responses[str(doc.status)] = {"description": "Success"}
            for status, response in doc.other_responses.items():
                responses[str(status)] = _hoist(response, components)
            # every route can be refused by the cross-site checks (403: Origin, Host) or fail (500);
            # with auth, refuse a token (401) or too many of them (429); a query or a body can be
            # unreadable (400), a body too large (413) or of another content type (415)
            statuses = {*doc.errors, 403, 500}
            credential = (surface.auth or surface.auth_always) and not doc.public
            category = surface.rate_category(doc)
            if credential:
                statuses |= {401, 429}
            if category is not None:
                statuses.add(429)
            if doc.query is not None or doc.body is not None:
                statuses.add(400)
            if doc.body is not None:
                statuses |= {413, 415}
            for status in sorted(statuses):
                entry: dict[str, Any] = {"description": _error_text(surface, doc, status, category, credential)}
                if surface.error_model is not None:
                    entry["content"] = {"application/json": {"schema": refs[surface.error_model]}}
                if status == 429:
                    entry["headers"] = {"Retry-After": _RETRY_AFTER}
                responses[str(status)] = entry
            if category is not None:
                _rate_limit_headers(responses)
                op["x-rate-limit"] = {"category": category, "limits": _category(surface, category).explain()}
            op["responses"] = responses
            if credential:
                op["security"] = _security(surface, doc)
            if doc.role is not None:
                op["x-required-role"] = doc.role
            paths.setdefault(doc.path, {})[doc.method.lower()] = op
    for surface in surfaces:
        if surface.complete_schemas is not None:
            surface.complete_schemas(app, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "stepflow",
            "version": "1.0.0",
            "description": "The APIs of stepflow's embedded listener. Authentication (a bearer token from "
                           "`stepflow token create`) is required when STEPFLOW_AUTH_ENABLED is true, and "
                           "always on the routes whose security lists no empty alternative.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": _security_schemes(surfaces),
            "headers": {name: {"description": text, "schema": {"type": "integer"}}
                        for name, text in _RATE_HEADERS.items()},
        },
    }


def _category(surface: Surface, name: str) -> RateCategory:
    assert surface.rate_policy is not None
    return surface.rate_policy.categories[name]


def _error_text(surface: Surface, doc: RouteDoc, status: int, category: str | None, credential: bool) -> str:
    if status == 403 and doc.role is not None:
        return f"Refused origin or host, or the credential's role is below {doc.role}"
    if status == 429 and category is not None:
        limits = f"Rate limit exceeded ({category}: {_category(surface, category).explain()})"
        return limits + (", or too many failed authentications" if credential else "")
    return _STATUS_TEXT.get(status, "Error")


def _rate_limit_headers(responses: dict[str, Any]) -> None:
    """Every answer of a rate-limited route carries the X-RateLimit-* headers."""
    for status, response in list(responses.items()):
        if "$ref" in response:
            continue
        headers = dict(response.get("headers", {}))
        headers.update({name: {"$ref": _HEADER_REF.format(name=name)} for name in _RATE_HEADERS})
        responses[status] = {**response, "headers": headers}


def _security(surface: Surface, doc: RouteDoc) -> list[dict[str, list[str]]]:
    """Bearer (or an API key, where accepted); OpenAPI 3.1 lets a non-OAuth scheme list the roles a
    route needs. `{}` first when the credential is asked for only with the listener's auth on."""
    roles = [doc.role] if doc.role is not None else []
    schemes: list[dict[str, list[str]]] = [{"bearer": roles}]
    if surface.api_key:
        schemes.append({"apiKey": roles})
    return schemes if surface.auth_always else [{}, *schemes]


def _security_schemes(surfaces: list[Surface]) -> dict[str, Any]:
    schemes: dict[str, Any] = {"bearer": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "`stepflow token create --user NAME --role standard|administrator`; a token "
                       "without a role is an administrator's"}}
    if any(s.api_key for s in surfaces):
        schemes["apiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key",
                             "description": "`stepflow token create --api-key --user NAME --role ROLE` "
                                            "(shown once, stored hashed)"}
    return schemes


async def openapi_handler(request: web.Request) -> web.Response:
    cache = request.app[OPENAPI_CACHE]
    text = cache.get("doc")
    if text is None:
        text = cache["doc"] = dumps(build(request.app))
    return web.Response(text=text, content_type="application/json")

"""Shared request parsing with each surface's own error body: a surface passes its error factory to
`QueryParams` and the body readers, and a bad parameter or body comes back as that surface's
documented error (here RustCI's `{"success": false, "error": {"code", "message"}}`), not Monitor's.
A real aiohttp server on loopback and a real client."""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from api_compat.query_params import QueryParams
from api_compat.request_parsing import RequestRefused, read_json_body

pytestmark = pytest.mark.timeout(30)


class RunnerStatus(enum.Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class RustciError(Exception):
    """A surface's own refusal, rendered by its own middleware."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@web.middleware
async def rustci_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except RustciError as exc:
        return web.json_response({"success": False, "error": {"code": "INVALID_REQUEST", "message": exc.message}},
                                 status=exc.status)
    except RequestRefused as exc:  # what a surface that forgot its factory would leak
        return web.json_response({"monitor": exc.message}, status=exc.status)


async def runners(request: web.Request) -> web.Response:
    q = QueryParams(request.query, error=RustciError)
    since = q.timestamp("since")
    return web.json_response({
        "limit": q.integer("limit", 50, minimum=1, maximum=500),
        "offset": q.integer("offset", 0, minimum=0),
        "status": (status.value if (status := q.choice("status", RunnerStatus)) else None),
        "sort": q.choice("sort", {"name", "created_at"}, "name"),
        "follow": q.boolean("follow", False),
        "since": since.isoformat() if since else None,
    })


async def bulk(request: web.Request) -> web.Response:
    return web.json_response({"got": await read_json_body(request, error=RustciError)})


@pytest.fixture
async def client(aiohttp_client: Any) -> TestClient:
    app = web.Application(middlewares=[rustci_errors])
    app.router.add_get("/api/runners", runners)
    app.router.add_post("/api/runners/bulk", bulk)
    return await aiohttp_client(app)


async def get(client: TestClient, query: str) -> tuple[int, Any]:
    async with client.get("/api/runners" + query) as resp:
        return resp.status, await resp.json()


async def test_typed_parameters_are_read_and_defaults_fill_the_rest(client: TestClient) -> None:
    status, body = await get(client, "?limit=20&status=inactive&sort=created_at&follow=TRUE"
                                     "&since=2024-01-15T10:00:00Z")
    assert status == 200
    assert body == {"limit": 20, "offset": 0, "status": "inactive", "sort": "created_at", "follow": True,
                    "since": "2024-01-15T10:00:00+00:00"}
    status, body = await get(client, "?follow=0")
    assert body == {"limit": 50, "offset": 0, "status": None, "sort": "name", "follow": False, "since": None}


@pytest.mark.parametrize(("query", "message"), [
    ("?limit=0", "query parameter 'limit' must be an integer from 1 to 500"),
    # an empty value is not an integer (the OpenAPI schema says so; schemathesis sends it)
    ("?limit=", "query parameter 'limit' must be an integer from 1 to 500"),
    ("?limit=501", "query parameter 'limit' must be an integer from 1 to 500"),
    ("?limit=ten", "query parameter 'limit' must be an integer from 1 to 500"),
    ("?limit=" + "9" * 5000, "query parameter 'limit' must be an integer from 1 to 500"),
    ("?limit=%EF%BC%95", "query parameter 'limit' must be an integer from 1 to 500"),  # a fullwidth 5
    ("?offset=-1", "query parameter 'offset' must be an integer of at least 0"),
    ("?status=gone", "query parameter 'status' must be one of active, inactive"),
    ("?sort=size", "query parameter 'sort' must be one of created_at, name"),
    ("?follow=maybe", "query parameter 'follow' must be true or false"),
    ("?since=yesterday", "query parameter 'since' must be an ISO 8601 date-time (2024-01-15T10:30:00Z)"),
])
async def test_a_bad_parameter_is_the_surfaces_own_400(client: TestClient, query: str, message: str) -> None:
    assert await get(client, query) == (400, {"success": False,
                                              "error": {"code": "INVALID_REQUEST", "message": message}})


async def test_timestamps_come_back_in_utc(client: TestClient) -> None:
    # an unencoded `+` in a query string reads as a space: the offset still counts
    for query in ("?since=2024-01-15T12:00:00%2B02:00", "?since=2024-01-15T12:00:00+02:00",
                  "?since=2024-01-15T10:00:00", "?since=2024-01-15T10:00:00.000Z"):
        status, body = await get(client, query)
        assert (status, body["since"]) == (200, "2024-01-15T10:00:00+00:00"), query


def test_query_params_without_a_server() -> None:
    q = QueryParams({"at": "2024-01-15", "n": " 7 "})
    assert q.timestamp("at") == datetime(2024, 1, 15, tzinfo=UTC)
    assert q.integer("n") == 7
    default = datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert q.timestamp("missing", default) is default
    with pytest.raises(RequestRefused) as refused:  # the default factory: Monitor's
        q.boolean("at")
    assert refused.value.status == 400


async def test_a_bad_body_is_the_surfaces_own_400(client: TestClient) -> None:
    async with client.post("/api/runners/bulk", data=b'{"operation": "restart"') as resp:
        body = await resp.json()
    assert resp.status == 400 and body["success"] is False
    assert body["error"]["message"].startswith("the request body is not valid JSON")
    async with client.post("/api/runners/bulk", data=b"") as resp:
        assert (resp.status, await resp.json()) == (400, {"success": False, "error": {
            "code": "INVALID_REQUEST", "message": "the request body must be a JSON object"}})
    async with client.post("/api/runners/bulk", json={"operation": "restart"}) as resp:
        assert (resp.status, await resp.json()) == (200, {"got": {"operation": "restart"}})

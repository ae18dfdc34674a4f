"""StepFlow Monitor's envelope: `{success, data, error, timestamp}` on every response; ours:
`warnings` (what a request carried that was ignored), present only when there is one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from api_compat.request_parsing import RequestRefused

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
dumps = _encoder.encode


class ApiError(RequestRefused):
    """A refusal with its HTTP status and a message for the `error` field (the shared plumbing's
    `RequestRefused`, rendered the same way)."""


T = TypeVar("T")


def found(row: T | None, what: str, row_id: str) -> T:
    """The row asked for by id, or a 404 naming it."""
    if row is None:
        raise ApiError(404, f"{what} {row_id} not found")
    return row


def page(key: str, items: list[dict[str, Any]], total: int, offset: int) -> dict[str, Any]:
    """A list's `data`: the items under `key`, how many match in all, and whether more follow."""
    return {key: items, "total_count": total, "has_more": offset + len(items) < total}


def now_iso() -> str:
    """`wire.iso(utcnow())`, without the calls: every answer carries one."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def ok(data: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    envelope = {"success": True, "data": data, "error": None, "timestamp": now_iso()}
    if warnings:
        envelope["warnings"] = warnings
    body = dumps(envelope)
    return web.Response(text=body, status=status, content_type="application/json")


def ok_json(data_json: str, status: int = 200) -> web.Response:
    """`ok` for `data` already encoded (with `dumps`): the same bytes, the timestamp of now."""
    body = f'{{"success":true,"data":{data_json},"error":null,"timestamp":"{now_iso()}"}}'
    return web.Response(text=body, status=status, content_type="application/json")


def fail(message: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    body = dumps({"success": False, "data": None, "error": message, "timestamp": now_iso()})
    return web.Response(text=body, status=status, content_type="application/json", headers=headers)

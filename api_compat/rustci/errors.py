"""RustCI's error body (`{"success": false, "error": {"code", "message", "details"}}`) and the
surface's `SurfaceErrors` (`api_compat.error_middleware`), set to answer every failure in it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api_compat.error_middleware import SurfaceErrors
from api_compat.request_parsing import RequestRefused, describe_fields
from engine.errors import EngineError

#: the documented codes, and ours where the document has none (NOT_FOUND of a route, CONFLICT)
CODE_OF_STATUS = {400: "INVALID_REQUEST", 401: "AUTHENTICATION_REQUIRED", 403: "AUTHORIZATION_FAILED",
                  404: "NOT_FOUND", 409: "CONFLICT", 413: "INVALID_REQUEST", 415: "INVALID_REQUEST",
                  422: "INVALID_REQUEST", 429: "RATE_LIMIT_EXCEEDED", 503: "RUNNER_UNAVAILABLE"}


class RustciErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = {}


class RustciErrorBody(BaseModel):
    success: bool = False
    error: RustciErrorDetail


class RustciError(RequestRefused):
    """A refusal in RustCI's error body, with its code and details."""

    def __init__(self, status: int, message: str, code: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(status, message)
        self.code = code or CODE_OF_STATUS.get(status, "INTERNAL_ERROR")
        self.details = details or {}


def not_found(runner_id: str) -> RustciError:
    return RustciError(404, f"Runner with ID '{runner_id}' not found", "RUNNER_NOT_FOUND",
                       {"runner_id": runner_id})


def body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"success": False, "error": {"code": code, "message": message,
                                        "details": {**(details or {}), "timestamp": stamp}}}


def fail(message: str, status: int, headers: dict[str, str] | None = None, *, code: str | None = None,
         details: dict[str, Any] | None = None) -> web.Response:
    code = code or CODE_OF_STATUS.get(status, "INTERNAL_ERROR")
    return web.Response(status=status, text=json.dumps(body(code, message, details)),
                        content_type="application/json", headers=headers)


def refuse_body(message: str, fields: list[str]) -> RustciError:
    """RustCI's 400 for a body that does not validate (`request_parsing.validate_object`)."""
    return RustciError(400, message, "INVALID_REQUEST", {"fields": fields} if fields else None)


def _validation(exc: ValidationError) -> web.Response:
    message, fields = describe_fields(exc)
    return fail(message, 400, details={"fields": fields})


def _refused(exc: RequestRefused) -> web.Response:
    if isinstance(exc, RustciError):
        return fail(exc.message, exc.status, code=exc.code, details=exc.details)
    return fail(exc.message, exc.status)


def _engine(request: web.Request, exc: EngineError, status: int) -> web.Response:
    details = {"runner_id": request.match_info["runner_id"]} if "runner_id" in request.match_info else None
    return fail(exc.message, status, details=details)


def surface_errors() -> SurfaceErrors:
    return SurfaceErrors(fail, validation=_validation, refused=_refused, engine=_engine)

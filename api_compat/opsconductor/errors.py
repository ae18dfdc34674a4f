"""OpsConductor's error body (`{"error": code, "message", "details"}`, the document's "Standard Error
Format") and its `SurfaceErrors`, set to answer every failure in it. Bodies that do not
validate and malformed serials are 422 `validation_error` with `details.field`; bad query
parameters 400 `bad_request`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api_compat.error_middleware import SurfaceErrors
from api_compat.request_parsing import RequestRefused
from engine.errors import EngineError

#: the `error` code of each status
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


class ErrorBody(BaseModel):
    error: str
    message: str
    details: dict[str, Any] | None = None


class OpsError(RequestRefused):
    """A refusal in OpsConductor's error body, with its details."""

    def __init__(self, status: int, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(status, message)
        self.details = details


def fail(message: str, status: int, headers: dict[str, str] | None = None,
         details: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": CODES.get(status, "error"), "message": message}
    if details:
        body["details"] = details
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def invalid(field: str, message: str, **details: Any) -> OpsError:
    return OpsError(422, message, {"field": field, **details})


def describe_validation(exc: ValidationError) -> OpsError:
    errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
              for e in exc.errors(include_url=False)]
    first = errors[0] if errors else {"field": "body", "message": "invalid"}
    message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return OpsError(422, message, {"field": first["field"], "errors": errors})


def _validation(exc: ValidationError) -> web.Response:
    refusal = describe_validation(exc)
    return fail(refusal.message, 422, details=refusal.details)


def _refused(exc: RequestRefused) -> web.Response:
    return fail(exc.message, exc.status, details=exc.details if isinstance(exc, OpsError) else None)


def _engine(request: web.Request, exc: EngineError, status: int) -> web.Response:
    return fail(exc.message, status)


def surface_errors() -> SurfaceErrors:
    return SurfaceErrors(fail, validation=_validation, refused=_refused, engine=_engine, query_token_on_upgrade=True)

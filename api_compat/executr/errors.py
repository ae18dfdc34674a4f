"""The executr error body (`{"error": message, "context": {...}}`) and the surface's one middleware:
auth, then every failure in that body. Where the reference answers 500 or drops the connection
(a malformed id, cancelling a running job, a report from an executor that does not hold the job),
this answers the documented 400/404, or 409 for the wrong executor."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api_compat.auth import AuthError, AuthThrottled
from api_compat.request_parsing import RequestRefused, input_error
from api_compat.state import SURFACES, VERIFIER
from api_compat.surface import Handler, Surface
from engine.errors import Conflict, EngineError, InvalidRequest, NotFound, ShuttingDown

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    error: str
    context: dict[str, Any] | None = None


class ExecutrError(RequestRefused):
    """A refusal in executr's error body, with its context."""

    def __init__(self, status: int, message: str, context: dict[str, Any] | None = None) -> None:
        super().__init__(status, message)
        self.context = context


def fail(message: str, status: int, headers: dict[str, str] | None = None,
         context: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if context:
        body["context"] = context
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


def describe_validation(exc: ValidationError) -> tuple[str, dict[str, Any]]:
    parts = []
    fields = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        fields.append(where)
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts), {"fields": fields}


_ENGINE_STATUS: tuple[tuple[type[EngineError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InvalidRequest, 400),
    (ShuttingDown, 503),
)


def error_middleware(surface: Surface) -> Any:
    @web.middleware
    async def executr_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        surfaces = request.app[SURFACES]
        if not surface.owns(request, surfaces):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return await handler(request)
        verifier = request.app[VERIFIER] if surface.auth else None
        if verifier is not None:
            try:
                verifier.check_request(request.headers.get("Authorization"), None, client=request.remote)
            except AuthThrottled as exc:
                return fail(str(exc), 429, {"Retry-After": str(exc.retry_after)})
            except AuthError as exc:
                return fail(str(exc), 401, {"WWW-Authenticate": 'Bearer realm="stepflow"'})
        try:
            return await handler(request)
        except ExecutrError as exc:
            return fail(exc.message, exc.status, context=exc.context)
        except RequestRefused as exc:
            return fail(exc.message, exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow",)}
            message = exc.reason if exc.status != 404 else f"no route {request.method} {request.path}"
            if exc.status == 413:
                message = "the request body is too large"
            return fail(message, exc.status, headers)
        except EngineError as exc:
            context = {"job_id": request.match_info["job_id"]} if "job_id" in request.match_info else None
            for cls, status in _ENGINE_STATUS:
                if isinstance(exc, cls):
                    return fail(exc.message, status, context=context)
            return fail(exc.message, 400, context=context)
        except ValidationError as exc:
            message, context = describe_validation(exc)
            return fail(message, 400, context=context)
        except Exception as exc:
            refusal = input_error(exc)
            if refusal is not None:
                return fail(refusal, 400)
            log.exception("unexpected error in %s %s", request.method, request.path)
            return fail("internal server error (see the server log)", 500)

    return executr_errors

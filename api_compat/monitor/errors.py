"""StepFlow Monitor's one error middleware: auth, then every failure as the documented envelope.

Engine errors map to statuses (NotFound 404, Conflict 409, InvalidRequest 400, ShuttingDown 503);
bad JSON 400 (read by the shared `request_parsing`, which refuses too deep or too long input),
bad query parameters 400, bad bodies 400 (the document's status for a bad request: the message names
the field), too large 413; input too deep or too long for parsing further down (a workflow's YAML)
400. Anything unexpected is logged
and answered with a 500 in the same envelope, never a traceback.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from api_compat.auth import AuthError, AuthThrottled
from api_compat.monitor.envelope import ApiError, fail
from api_compat.request_parsing import REQUIRED, RequestRefused, input_error, read_json_body
from api_compat.state import SURFACES, VERIFIER
from api_compat.surface import Handler, Surface
from engine.errors import Conflict, EngineError, InvalidRequest, NotFound, ShuttingDown

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_ENGINE_STATUS: tuple[tuple[type[EngineError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InvalidRequest, 400),
    (ShuttingDown, 503),
)


def _workflow_error() -> type[Exception] | None:
    try:
        from engine.workflow.load import WorkflowError
    except ImportError:  # pragma: no cover - until the workflow module lands
        return None
    return WorkflowError


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


async def read_json(request: web.Request, model: type[M], *, optional: bool = False) -> tuple[M, list[str]]:
    """The body validated against `model` (400 when it is not JSON or does not fit, the field
    named), and a warning for each unknown field, which is ignored rather than refused."""
    payload = await read_json_body(request, empty={} if optional else REQUIRED)
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = [key for key in payload if key not in model.model_fields]
    try:
        body = model.model_validate({k: v for k, v in payload.items() if k not in unknown})
    except ValidationError as exc:
        raise ApiError(400, describe_validation(exc)) from None
    # a key is echoed back at most 100 characters long: the body may be up to 1 MiB
    return body, [f"unknown field {key[:100]!r} ignored" for key in unknown]


def read_query(request: web.Request, model: type[M]) -> M:
    """Query parameters validated against `model` (400 when they do not fit). A field typed as a
    list takes every occurrence of its parameter; any other, given twice, is refused."""
    values: dict[str, Any] = {}
    for key in request.query.keys():
        field = model.model_fields.get(key)
        if field is None:
            continue
        given = request.query.getall(key)
        if "list" in str(field.annotation):
            values[key] = given
        elif len(given) > 1:
            raise ApiError(400, f"invalid query parameters: {key}: given more than once")
        else:
            values[key] = given[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(400, "invalid query parameters: " + describe_validation(exc)) from None


def error_middleware(surface: Surface) -> Any:
    workflow_error = _workflow_error()

    @web.middleware
    async def monitor_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        surfaces = request.app[SURFACES]  # read first: as an argument, mypy infers the key from `owns`'s Sequence
        if not surface.owns(request, surfaces):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return await handler(request)  # a CORS preflight: cross_site.py answers it or refuses it
        verifier = request.app[VERIFIER] if surface.auth else None
        if verifier is not None:
            try:
                # browsers cannot set headers on a WebSocket: accept ?token= on an upgrade only
                is_upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
                query_token = request.query.get("token") if is_upgrade else None
                verifier.check_request(request.headers.get("Authorization"), query_token, client=request.remote)
            except AuthThrottled as exc:
                return fail(str(exc), 429, {"Retry-After": str(exc.retry_after)})
            except AuthError as exc:
                return fail(str(exc), 401, {"WWW-Authenticate": 'Bearer realm="stepflow"'})
        try:
            return await handler(request)
        except RequestRefused as exc:  # ApiError too
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
            for cls, status in _ENGINE_STATUS:
                if isinstance(exc, cls):
                    return fail(exc.message, status)
            return fail(exc.message, 400)
        except ValidationError as exc:
            return fail(describe_validation(exc), 400)
        except Exception as exc:
            if workflow_error is not None and isinstance(exc, workflow_error):
                return fail(str(exc), 400)
            refusal = input_error(exc)
            if refusal is not None:
                # parsing deeper down (a workflow's YAML inside the JSON) met an input too deep or
                # too long to read: the client's doing, not the server's
                log.info("refused %s %s: %s (%s)", request.method, request.path, refusal, type(exc).__name__)
                return fail(refusal, 400)
            log.exception("unexpected error in %s %s", request.method, request.path)
            return fail("internal server error (see the server log)", 500)

    return monitor_errors

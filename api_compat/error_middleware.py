"""The one error middleware every surface installs: access (credential, rate limit, role:
api_compat/access.py), then every failure answered in the
surface's own error body. A surface gives its body (`fail`) and what only it knows (how it words a
validation error, the context it adds to an engine error, exceptions it also takes as the client's
doing); the order of the checks and the statuses are the same for all.

Engine errors map to statuses by `ENGINE_STATUS`; HTTP errors keep theirs (404 names the route, 413
says the body is too large); input too deep or too long for parsing 400; anything unexpected is
logged and answered with a 500 in the surface's body, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from api_compat.access import Denial, admit
from api_compat.request_parsing import RequestRefused, input_error
from api_compat.state import SURFACES
from api_compat.surface import Handler, Surface
from engine.errors import Conflict, EngineError, InvalidRequest, NotFound, ShuttingDown

log = logging.getLogger(__name__)

#: the status each engine error is answered with (any other EngineError: 400)
ENGINE_STATUS: tuple[tuple[type[EngineError], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (InvalidRequest, 400),
    (ShuttingDown, 503),
)

Fail = Callable[[str, int, "dict[str, str] | None"], web.StreamResponse]


def engine_status(exc: EngineError) -> int:
    for cls, status in ENGINE_STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def error_middleware(
    surface: Surface,
    fail: Fail,
    *,
    validation: Callable[[ValidationError], web.StreamResponse],
    refused: Callable[[RequestRefused], web.StreamResponse] | None = None,
    engine: Callable[[web.Request, EngineError, int], web.StreamResponse] | None = None,
    client_error: type[Exception] | None = None,
    query_token_on_upgrade: bool = False,
    denied: Callable[[Denial], web.StreamResponse] | None = None,
) -> Any:
    """`refused` answers a `RequestRefused` (default: its message and status), `engine` an engine
    error with its status (default: its message); a `client_error` is answered 400 with its text.
    `denied` answers a request refused by the access checks (api_compat/access.py: 401, 403, 429;
    default: `fail` with the denial's message, status and headers, which must be kept).
    `query_token_on_upgrade` accepts `?token=` on a WebSocket upgrade (browsers cannot set headers
    on one)."""

    @web.middleware
    async def surface_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        surfaces = request.app[SURFACES]  # read first: as an argument, mypy infers the key from `owns`'s Sequence
        if not surface.owns(request, surfaces):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return await handler(request)  # a CORS preflight: cross_site.py answers it or refuses it
        denial = admit(request, surface, query_token_on_upgrade=query_token_on_upgrade)
        if denial is not None:
            return denied(denial) if denied is not None else fail(denial.message, denial.status, denial.headers)
        try:
            return await handler(request)
        except RequestRefused as exc:
            return refused(exc) if refused is not None else fail(exc.message, exc.status, None)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow",)}
            message = exc.reason if exc.status != 404 else f"no route {request.method} {request.path}"
            if exc.status == 413:
                message = "the request body is too large"
            return fail(message, exc.status, headers)
        except EngineError as exc:
            status = engine_status(exc)
            return engine(request, exc, status) if engine is not None else fail(exc.message, status, None)
        except ValidationError as exc:
            return validation(exc)
        except Exception as exc:
            if client_error is not None and isinstance(exc, client_error):
                return fail(str(exc), 400, None)
            refusal = input_error(exc)
            if refusal is not None:
                # parsing deeper down (a workflow's YAML inside the JSON) met an input too deep or
                # too long to read: the client's doing, not the server's
                log.info("refused %s %s: %s (%s)", request.method, request.path, refusal, type(exc).__name__)
                return fail(refusal, 400, None)
            log.exception("unexpected error in %s %s", request.method, request.path)
            return fail("internal server error (see the server log)", 500, None)

    return surface_errors

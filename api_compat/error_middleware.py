"""Every surface's access checks and error answers, run by one dispatching middleware: it finds the
request's surface once (`Owners`: by the matched route, else the path's prefix) and runs only that
surface's checks, access (credential, rate limit, role: api_compat/access.py) and then every failure
answered in the surface's own error body. A surface gives its body (`fail`) and what only it knows
(`SurfaceErrors`: how it words a validation error, the context it adds to an engine error,
exceptions it also takes as the client's doing); the order of the checks and the statuses are the
same for all.

Engine errors map to statuses by `ENGINE_STATUS`; HTTP errors keep theirs (404 names the route, 413
says the body is too large); input too deep or too long for parsing 400; anything unexpected is
logged and answered with a 500 in the surface's body, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

from api_compat.access import ACCESS, PRINCIPAL, Denial, admit
from api_compat.principal import OWNER
from api_compat.request_parsing import RequestRefused, input_error
from api_compat.state import SURFACES
from api_compat.surface import Handler, Owners, Surface
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
#: rewrites every answer of a surface's request (its errors too) before it leaves
Reshape = Callable[[web.Request, web.StreamResponse], Awaitable[web.StreamResponse]]


def engine_status(exc: EngineError) -> int:
    for cls, status in ENGINE_STATUS:
        if isinstance(exc, cls):
            return status
    return 400


@dataclass(frozen=True, slots=True)
class SurfaceErrors:
    """How one surface answers what goes wrong. `refused` answers a `RequestRefused` (default: its
    message and status), `engine` an engine error with its status (default: its message); a
    `client_error` is answered 400 with its text. `denied` answers a request refused by the access
    checks (api_compat/access.py: 401, 403, 429; default: `fail` with the denial's message, status
    and headers, which must be kept). `query_token_on_upgrade` accepts `?token=` on a WebSocket
    upgrade (browsers cannot set headers on one). `reshape`, when given, rewrites every answer."""

    fail: Fail
    validation: Callable[[ValidationError], web.StreamResponse]
    refused: Callable[[RequestRefused], web.StreamResponse] | None = None
    engine: Callable[[web.Request, EngineError, int], web.StreamResponse] | None = None
    client_error: type[Exception] | None = None
    query_token_on_upgrade: bool = False
    denied: Callable[[Denial], web.StreamResponse] | None = None
    reshape: Reshape | None = None

    def deny(self, denial: Denial) -> web.StreamResponse:
        return self.denied(denial) if self.denied is not None else self.fail(denial.message, denial.status,
                                                                            denial.headers)

    def answer(self, request: web.Request, exc: Exception) -> web.StreamResponse | None:
        """The surface's answer to `exc` raised by a handler; None: not an error, raise it on (an
        HTTP redirect)."""
        fail = self.fail
        if isinstance(exc, RequestRefused):
            return self.refused(exc) if self.refused is not None else fail(exc.message, exc.status, None)
        if isinstance(exc, web.HTTPException):
            if exc.status < 400:
                return None
            headers = {k: v for k, v in exc.headers.items() if k in ("Allow",)}
            message = exc.reason if exc.status != 404 else f"no route {request.method} {request.path}"
            if exc.status == 413:
                message = "the request body is too large"
            return fail(message, exc.status, headers)
        if isinstance(exc, EngineError):
            status = engine_status(exc)
            return self.engine(request, exc, status) if self.engine is not None else fail(exc.message, status, None)
        if isinstance(exc, ValidationError):
            return self.validation(exc)
        if self.client_error is not None and isinstance(exc, self.client_error):
            return fail(str(exc), 400, None)
        refusal = input_error(exc)
        if refusal is not None:
            # parsing deeper down (a workflow's YAML inside the JSON) met an input too deep or too
            # long to read: the client's doing, not the server's
            log.info("refused %s %s: %s (%s)", request.method, request.path, refusal, type(exc).__name__)
            return fail(refusal, 400, None)
        log.exception("unexpected error in %s %s", request.method, request.path, exc_info=exc)
        return fail("internal server error (see the server log)", 500, None)


@dataclass(frozen=True, slots=True)
class _Route:
    """What runs for one surface's requests."""

    surface: Surface
    errors: SurfaceErrors
    #: False: nothing to check (no credential asked for, no limits): the caller is the owner
    checks_access: bool


class Dispatch:
    """The application's surfaces by route, built when it starts (every route is added by then: the
    router is frozen), or on its first request."""

    __slots__ = ("_owners", "_routes")

    def __init__(self) -> None:
        self._owners: Owners | None = None
        #: by id(surface): a Surface, a dataclass, is not hashable
        self._routes: dict[int, _Route] = {}

    def build(self, app: web.Application) -> Owners:
        surfaces = app[SURFACES]
        access = app.get(ACCESS)
        listener_auth = access.listener_auth if access is not None else False
        self._routes = {id(s): _Route(s, s.errors, s.checks_access(listener_auth))
                        for s in surfaces if s.errors is not None}
        self._owners = Owners(surfaces)
        return self._owners

    def route(self, request: web.Request) -> _Route | None:
        """What runs for `request`: its surface, with its errors; None: no surface takes it."""
        owners = self._owners if self._owners is not None else self.build(request.app)
        surface = owners.owner(request)
        return self._routes.get(id(surface)) if surface is not None else None


DISPATCH = web.AppKey("dispatch", Dispatch)


def install(app: web.Application) -> None:
    """The one middleware of `app` for all its surfaces (after the cross-site one, which is
    outermost)."""
    dispatch = app[DISPATCH] = Dispatch()

    async def build(app: web.Application) -> None:
        dispatch.build(app)

    app.on_startup.append(build)
    app.middlewares.append(_checks(dispatch.route))


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
) -> Middleware:
    """One surface's checks as a middleware of its own, acting on that surface's requests only: for
    a surface added to an application beside the dispatched ones (tests). A surface of the API sets
    `Surface.errors` instead, run by the application's one middleware (`install`)."""
    errors = SurfaceErrors(fail, validation, refused, engine, client_error, query_token_on_upgrade, denied)
    route = _Route(surface, errors, checks_access=True)

    def find(request: web.Request) -> _Route | None:
        surfaces = request.app[SURFACES]  # read first: as an argument, mypy infers the key from `owns`'s Sequence
        return route if surface.owns(request, surfaces) else None

    return _checks(find)


def _checks(find: Callable[[web.Request], _Route | None]) -> Middleware:
    """The middleware that runs, for a request `find` gives a surface to, that surface's access
    checks (when it has any) and then its handler, every failure answered in the surface's body."""

    @web.middleware
    async def surface_checks(request: web.Request, handler: Handler) -> web.StreamResponse:
        found = find(request)
        if found is None:
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return await handler(request)  # a CORS preflight: cross_site.py answers it or refuses it
        errors = found.errors
        if found.checks_access:
            denial = admit(request, found.surface, query_token_on_upgrade=errors.query_token_on_upgrade)
        else:
            denial = None
            request[PRINCIPAL] = OWNER
        if denial is not None:
            response = errors.deny(denial)
        else:
            try:
                response = await handler(request)
            except Exception as exc:
                answer = errors.answer(request, exc)
                if answer is None:
                    raise  # an HTTP redirect
                response = answer
        return await errors.reshape(request, response) if errors.reshape is not None else response

    return surface_checks

"""Who may call a route, and how often: the checks the dispatching middleware
(api_compat/error_middleware.py) makes before a surface's handler runs, from what the surface and
the route declare (api_compat/surface.py). A surface that asks for no credential (the listener's
auth off) and has no limits is not checked at all (`Surface.checks_access`): its caller is `OWNER`.

1. A credential when the surface requires one (`Surface.requires_credential`): a Bearer JWT, or an
   `X-API-Key` on a surface that accepts keys. Missing, bad, expired or revoked: 401; too many
   failures from one address: 429 (api_compat/auth.py).
2. The route's rate-limit category, counted by user, client address or path parameter
   (api_compat/rate_limits.py): every answer carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`
   (a Unix timestamp); past the limit, 429 with `Retry-After`.
3. The route's least role (`RouteDoc.role`): 403 when the credential's role is lower.

Each refusal is a `Denial`, answered by the surface in its own error body. The handler reads who
called from `request[PRINCIPAL]` (`OWNER`, an administrator, when no credential was asked for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from api_compat.auth import AuthError, AuthThrottled, TokenVerifier
from api_compat.config import ApiConfig
from api_compat.principal import OWNER, Principal
from api_compat.rate_limits import RateLimiter, RatePolicy, RateState
from api_compat.state import SURFACES
from api_compat.surface import RouteDoc, Surface

#: who made the request (set before a surface's handler runs)
PRINCIPAL = web.RequestKey("principal", Principal)
#: the request's rate-limit count, when its route is limited
RATE_STATE = web.RequestKey("rate_state", RateState)

AUTHENTICATION_REQUIRED = "authentication_required"
AUTH_THROTTLED = "auth_throttled"
RATE_LIMITED = "rate_limited"
FORBIDDEN = "forbidden"


@dataclass(frozen=True, slots=True)
class Denial:
    """A request refused before its handler: `kind` is one of the four above."""

    kind: str
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    #: the role the route needs (FORBIDDEN), the count (RATE_LIMITED)
    required_role: str | None = None
    rate: RateState | None = None


class Access:
    """The listener's credentials and counters, shared by its applications (app[ACCESS])."""

    def __init__(self, data_dir: Path, config: ApiConfig, verifier: TokenVerifier | None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.listener_auth = config.auth_enabled
        self._verifier = verifier
        self._limiter: RateLimiter | None = None

    def verifier(self) -> TokenVerifier:
        """The listener's verifier; made on first use when the listener's own auth is off (a
        surface that always asks for a credential: the secret is then made in the data directory)."""
        if self._verifier is None:
            self._verifier = TokenVerifier(self.data_dir, failure_limit=self.config.auth_failure_limit)
        return self._verifier

    def build_limiter(self, surfaces: list[Surface]) -> RateLimiter:
        """The counters for every surface's policy, with the configured overrides (ConfigError when
        one names no category of this listener)."""
        if self._limiter is None:
            policies: dict[str, RatePolicy] = {s.name: s.rate_policy for s in surfaces if s.rate_policy}
            self._limiter = RateLimiter(policies, self.config.rate_limits)
        return self._limiter


ACCESS = web.AppKey("access", Access)


def install(app: web.Application, access: Access) -> None:
    """Give `app` the shared access state and the rate-limit headers on every answer (a streamed
    one too: the headers are added as it is prepared). Call after the surfaces are in app[SURFACES]."""
    app[ACCESS] = access

    async def build(app: web.Application) -> None:
        access.build_limiter(app[SURFACES])
        if any(s.auth_always for s in app[SURFACES]):
            access.verifier()  # the secret exists from the start, not from the first request

    async def add_rate_headers(request: web.Request, response: web.StreamResponse) -> None:
        state = request.get(RATE_STATE)
        if state is not None:
            response.headers.update(state.headers())

    # first: a wrong override stops the start before any surface starts its streams
    app.on_startup.insert(0, build)
    app.on_response_prepare.append(add_rate_headers)


def _rate_key(request: web.Request, by: str, principal: Principal) -> str:
    if by == "user":
        return f"user:{principal.user}" if principal.authenticated else f"ip:{request.remote}"
    if by == "ip":
        return f"ip:{request.remote}"
    param = by.removeprefix("path:")
    return f"{param}:{request.match_info.get(param, request.path)}"


def _presented(request: web.Request, surface: Surface) -> str | None:
    """The bearer token, else (on a surface that takes keys) the `X-API-Key`, as sent."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("X-API-Key") if surface.api_key else None


def _authenticate(request: web.Request, surface: Surface, doc: RouteDoc | None,
                  query_token_on_upgrade: bool) -> Principal | Denial:
    access = request.app[ACCESS]
    if not surface.requires_credential(access.listener_auth) or (doc is not None and doc.public):
        return OWNER
    is_upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    query_token = request.query.get("token") if query_token_on_upgrade and is_upgrade else None
    if surface.own_credential is not None:
        presented = _presented(request, surface) or query_token
        own = surface.own_credential(request, presented) if presented else None
        if own is not None:
            return own
    try:
        return access.verifier().check_request(
            request.headers.get("Authorization"), query_token, client=request.remote,
            api_key=request.headers.get("X-API-Key") if surface.api_key else None,
            api_key_accepted=surface.api_key)
    except AuthThrottled as exc:
        return Denial(AUTH_THROTTLED, 429, str(exc), {"Retry-After": str(exc.retry_after)})
    except AuthError as exc:
        return Denial(AUTHENTICATION_REQUIRED, 401, str(exc), {"WWW-Authenticate": 'Bearer realm="stepflow"'})


def admit(request: web.Request, surface: Surface, *, query_token_on_upgrade: bool = False) -> Denial | None:
    """Check the request against what `surface` and its route declare; None when it may go on
    (then `request[PRINCIPAL]` is set)."""
    doc = surface.doc_for(request)
    principal = _authenticate(request, surface, doc, query_token_on_upgrade)
    if isinstance(principal, Denial):
        return principal
    request[PRINCIPAL] = principal
    category = surface.rate_category(doc)
    if category is not None and surface.rate_policy is not None:
        by = surface.rate_policy.categories[category].by
        limiter = request.app[ACCESS].build_limiter(request.app[SURFACES])
        state = limiter.hit(surface.name, category, principal.role, _rate_key(request, by, principal))
        if state is not None:
            request[RATE_STATE] = state
            if not state.allowed:
                return Denial(RATE_LIMITED, 429,
                              f"rate limit exceeded: {state.limit} requests per window ({category}); "
                              f"retry in {state.retry_after()} s",
                              {**state.headers(), "Retry-After": str(state.retry_after())}, rate=state)
    if doc is not None and not principal.allows(doc.role):
        return Denial(FORBIDDEN, 403, f"this needs the {doc.role} role; {principal.user} has the "
                                      f"{principal.role} role", required_role=doc.role)
    return None


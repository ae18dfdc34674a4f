"""An API surface: one documented API on the shared listener, with its own routes, envelope, errors
and auth.

Several documented APIs share paths under `/api` (StepFlow Monitor's `/api/executions/{id}` and
OpsConductor's `/api/executions/search`), so they cannot be prefix sub-apps. Each surface adds its
routes to the one router, remembers which resources are its own, and gives its error handling
(`Surface.errors`: api_compat/error_middleware.py). One middleware finds the request's surface once
(`Owners`, built when the application starts) and runs only that surface's access checks and error
handling. A request that matches no route belongs to the surface claiming the longest prefix of its
path, else to the fallback surface (StepFlow Monitor).

Every route is added with its documentation (`RouteDoc`), from which `/api/openapi.json` is built.

Access is declared here too and applied by the shared middleware (api_compat/access.py): a surface
says when it wants a credential (`auth`: when the listener's auth is on; `auth_always`: on every
request, whatever the listener's setting), whether `X-API-Key` is accepted besides a Bearer token
(`api_key`), and its rate limits (`rate_policy`); a route says the least role it needs
(`RouteDoc.role`), its rate-limit category (`RouteDoc.rate_limit`), or that it needs no credential
(`RouteDoc.public`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource
from pydantic import BaseModel

from api_compat.principal import ROLES, Principal
from api_compat.rate_limits import RatePolicy

if TYPE_CHECKING:
    from api_compat.error_middleware import SurfaceErrors

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class RouteDoc:
    method: str
    path: str
    summary: str
    tag: str
    description: str = ""
    #: a model whose fields are the query parameters
    query: type[BaseModel] | None = None
    #: a model for a JSON body, or a JSON schema dict for another content type
    body: type[BaseModel] | dict[str, Any] | None = None
    body_content_type: str = "application/json"
    #: a model (the `data` of the envelope), or a raw OpenAPI response object
    response: type[BaseModel] | dict[str, Any] | None = None
    status: int = 200
    errors: Sequence[int] = ()
    websocket: bool = False
    operation_id: str = ""
    #: schemas of path parameters (default: a string)
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: other answers than `status` and errors: status -> response object (executr's claim: 204)
    other_responses: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: the least role a caller needs ("administrator"); None: any authenticated caller
    role: str | None = None
    #: the rate-limit category of the surface's `rate_policy` (None: the policy's default)
    rate_limit: str | None = None
    #: answered without a credential even on a surface that asks for one
    public: bool = False


@dataclass(slots=True)
class Surface:
    name: str
    title: str
    #: wraps a `data` model into this surface's success envelope, for the OpenAPI document
    envelope: Callable[[type[BaseModel]], type[BaseModel]] | None = None
    #: the model of this surface's error body
    error_model: type[BaseModel] | None = None
    #: path prefixes whose unmatched requests (404/405) this surface answers
    prefixes: tuple[str, ...] = ()
    fallback: bool = False
    routes: list[RouteDoc] = field(default_factory=list)
    resources: set[AbstractResource] = field(default_factory=set)
    #: requires a bearer token when auth is enabled (it is per surface: some APIs document their own)
    auth: bool = True
    #: completes the document's `components/schemas` with what only the running application knows
    #: (the names of the configured targets, say), so that the document describes this listener
    complete_schemas: Callable[[web.Application, dict[str, Any]], None] | None = None
    #: builds this surface's error body: (message, status, headers) -> response; used by the shared
    #: plumbing (cross-site refusals) to answer in the surface's own format
    refusal: Callable[[str, int, dict[str, str] | None], web.StreamResponse] | None = None
    #: requires a credential on every request, even when the listener's auth is off (OpsConductor's
    #: document asks for a Bearer JWT on every route; the secret is then made in the data directory)
    auth_always: bool = False
    #: accepts `X-API-Key: <key>` (keys from `stepflow token create --api-key`) besides Bearer tokens
    api_key: bool = False
    #: the surface's request limits per category (api_compat/rate_limits.py); None: not limited
    rate_policy: RatePolicy | None = None
    #: a credential of the surface's own, tried before the listener's tokens and keys: (request, the
    #: bearer token or key presented) -> who it is, or None (RustCI: a runner's registration token,
    #: on that runner's own routes)
    own_credential: Callable[[web.Request, str], Principal | None] | None = None
    #: each route's documentation by (resource, method): what the access middleware reads
    docs: dict[tuple[AbstractResource, str], RouteDoc] = field(default_factory=dict)
    #: how this surface answers its failures and refusals, run by the application's one dispatching
    #: middleware for this surface's requests only (None: its requests reach the handler as they are)
    errors: SurfaceErrors | None = None

    def requires_credential(self, listener_auth: bool) -> bool:
        return self.auth_always or (self.auth and listener_auth)

    def rate_category(self, doc: RouteDoc | None) -> str | None:
        if self.rate_policy is None:
            return None
        return doc.rate_limit if doc is not None and doc.rate_limit else self.rate_policy.default

    def doc_for(self, request: web.Request) -> RouteDoc | None:
        """The documentation of the route `request` matched (None: it matched none of this surface's)."""
        match_info = request.match_info
        if match_info.http_exception is not None:
            return None
        resource = match_info.route.resource
        return self.docs.get((resource, request.method)) if resource is not None else None  # type: ignore[arg-type]

    def _check_access(self, path: str, doc: RouteDoc) -> None:
        if doc.role is not None and doc.role not in ROLES:
            raise ValueError(f"{doc.method} {path}: role {doc.role!r} is not one of {', '.join(ROLES)}")
        if doc.rate_limit is not None and (self.rate_policy is None
                                           or doc.rate_limit not in self.rate_policy.categories):
            raise ValueError(f"{doc.method} {path}: the {self.name} surface has no rate-limit category "
                             f"{doc.rate_limit!r}")
        category = self.rate_category(doc)
        if category is not None and self.rate_policy is not None:
            declared = self.rate_policy.categories[category]
            declared.check(f"{self.name}.{category}")
            param = declared.path_param()
            if param is not None and "{" + param not in path:
                raise ValueError(f"{doc.method} {path}: rate-limit category {category!r} counts by the "
                                 f"path parameter {param!r}, which this path does not have")

    def add(self, router: web.UrlDispatcher, method: str, path: str, handler: Handler, doc: RouteDoc,
            *, name: str | None = None) -> None:
        self._check_access(path, doc)
        route = router.add_route(method, path, handler, name=name)
        self.resources.add(route.resource)  # type: ignore[arg-type]
        self.docs[(route.resource, method)] = doc  # type: ignore[index]
        if method == "GET" and not doc.websocket:
            # HTTP asks every GET resource to answer HEAD too (`curl -I`, uptime checks); aiohttp
            # sends the headers without the body. Not in the OpenAPI document: it adds nothing there.
            head = router.add_route("HEAD", path, handler)
            self.resources.add(head.resource)  # type: ignore[arg-type]
            self.docs[(head.resource, "HEAD")] = doc  # type: ignore[index]
        self.routes.append(doc)

    def owns(self, request: web.Request, others: Sequence[Surface]) -> bool:
        """Whether `request` is this surface's, among `others` (every surface of the application)."""
        return Owners(others).owner(request) is self

    def checks_access(self, listener_auth: bool) -> bool:
        """Whether a request can be refused or counted here: a credential asked for, or limits
        (without either, every caller is the owner, who holds every role)."""
        return self.requires_credential(listener_auth) or self.rate_policy is not None


class Owners:
    """Which surface each request belongs to, from the surfaces of one application (in the order of
    `app[SURFACES]`): a matched route to the surface that added it (the first, were two to share a
    resource); an unmatched path (404, 405) to the surface with the longest prefix of it, else the
    fallback surface; None for a route no surface added."""

    __slots__ = ("_by_route", "_prefixes", "_fallback")

    def __init__(self, surfaces: Sequence[Surface]) -> None:
        self._by_route: dict[object, Surface] = {}
        for surface in surfaces:
            for resource in surface.resources:
                for resource_route in resource:
                    self._by_route.setdefault(resource_route, surface)
        # the longest first: OpsConductor's `/ws/executions` before Monitor's `/ws`
        self._prefixes = sorted(((p, s) for s in surfaces for p in s.prefixes), key=lambda ps: -len(ps[0]))
        self._fallback = next((s for s in surfaces if s.fallback), None)

    def owner(self, request: web.Request) -> Surface | None:
        match_info = request.match_info
        surface = self._by_route.get(match_info.route)
        if surface is not None or match_info.http_exception is None:
            return surface
        return self.unmatched(request.path)

    def unmatched(self, path: str) -> Surface | None:
        """The surface that answers a path no route matched."""
        for prefix, surface in self._prefixes:
            if path.startswith(prefix):
                return surface
        return self._fallback


def route(router: web.UrlDispatcher, surface: Surface, method: str, path: str, handler: Handler,
          summary: str, tag: str, **doc: Any) -> None:
    surface.add(router, method, path, handler, RouteDoc(method=method, path=path, summary=summary, tag=tag,
                                                        **doc))

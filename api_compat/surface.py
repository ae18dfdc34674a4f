"""An API surface: one documented API on the shared listener, with its own routes, envelope, errors
and auth.

Several documented APIs share paths under `/api` (StepFlow Monitor's `/api/executions/{id}` and
OpsConductor's `/api/executions/search`), so they cannot be prefix sub-apps. Each surface adds its
routes to the one router, remembers which resources are its own, and installs one middleware that
acts only on its own requests (`Surface.owns`). Requests that match no route belong to the surface
that claims their path prefix, else to the fallback surface (StepFlow Monitor).

Every route is added with its documentation (`RouteDoc`), from which `/api/openapi.json` is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource
from pydantic import BaseModel

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

    def add(self, router: web.UrlDispatcher, method: str, path: str, handler: Handler, doc: RouteDoc,
            *, name: str | None = None) -> None:
        route = router.add_route(method, path, handler, name=name)
        self.resources.add(route.resource)  # type: ignore[arg-type]
        if method == "GET" and not doc.websocket:
            # HTTP asks every GET resource to answer HEAD too (`curl -I`, uptime checks); aiohttp
            # sends the headers without the body. Not in the OpenAPI document: it adds nothing there.
            head = router.add_route("HEAD", path, handler)
            self.resources.add(head.resource)  # type: ignore[arg-type]
        self.routes.append(doc)

    def owns(self, request: web.Request, others: Sequence[Surface]) -> bool:
        match_info = request.match_info
        if match_info.http_exception is None:
            return match_info.route.resource in self.resources
        path = request.path
        if any(path.startswith(p) for p in self.prefixes):
            return True
        if not self.fallback:
            return False
        return not any(o is not self and any(path.startswith(p) for p in o.prefixes) for o in others)


def route(router: web.UrlDispatcher, surface: Surface, method: str, path: str, handler: Handler,
          summary: str, tag: str, **doc: Any) -> None:
    surface.add(router, method, path, handler, RouteDoc(method=method, path=path, summary=summary, tag=tag,
                                                        **doc))

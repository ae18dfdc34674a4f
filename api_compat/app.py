"""The application factory: one aiohttp application carrying every API surface, plus the small
application that serves the StepFlow Monitor WebSocket on its own port."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from api_compat import monitor, openapi
from api_compat.auth import TokenVerifier
from api_compat.config import ApiConfig
from api_compat.monitor.ws import WsHub
from api_compat.state import CONFIG, ENGINE, STARTED_AT, SURFACES, VERIFIER, WS_HUB, ServedEngine
from api_compat.surface import Handler, route

_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type"


def _data_dir(engine: ServedEngine, config: ApiConfig) -> Path:
    return Path(config.data_dir) if config.data_dir is not None else Path(engine.data_dir)


def _cors_middleware(origins: tuple[str, ...]):  # noqa: ANN202 - aiohttp middleware
    allow_any = "*" in origins
    allowed = frozenset(origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None or not (allow_any or origin.rstrip("/") in allowed):
            return await handler(request)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = _CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = request.headers.get(
                "Access-Control-Request-Headers", _CORS_HEADERS)
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin
        if not allow_any:
            response.headers["Vary"] = "Origin"
        return response

    return cors


def _common_state(app: web.Application, engine: ServedEngine, config: ApiConfig,
                  verifier: TokenVerifier | None, hub: WsHub) -> None:
    app[ENGINE] = engine
    app[CONFIG] = config
    app[VERIFIER] = verifier
    app[WS_HUB] = hub
    app[STARTED_AT] = time.monotonic()


def create_app(engine: ServedEngine, *, config: ApiConfig) -> web.Application:
    """The main application: every API surface on one router. Its cleanup context starts the
    WebSocket hub (subscribed to the engine) and, on shutdown, closes the sockets with 1001."""
    config.check()
    verifier = TokenVerifier(_data_dir(engine, config)) if config.auth_enabled else None
    hub = WsHub(engine, client_queue=config.ws_client_queue, log_budget=config.ws_log_budget)
    middlewares = [_cors_middleware(config.cors_origins)] if config.cors_origins else []
    app = web.Application(client_max_size=config.max_json_bytes, middlewares=middlewares)
    _common_state(app, engine, config, verifier, hub)
    app[openapi.OPENAPI_CACHE] = {}

    surface = monitor.make_surface()
    app[SURFACES] = [surface]
    monitor.install(app, surface)
    route(app.router, surface, "GET", "/api/openapi.json", openapi.openapi_handler,
          "This document: every route of every API on this listener", "openapi",
          response={"description": "An OpenAPI 3.1 document", "content": {"application/json": {}}})
    # the next documented APIs (OpsConductor, RustCI runners, executr) go here, each as
    # `surface = x.make_surface(); app[SURFACES].append(surface); x.install(app, surface)`,
    # registered BEFORE Monitor's when their paths overlap `/api/executions/{execution_id}`.

    async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.stop()

    async def close_sockets(app: web.Application) -> None:
        # on_shutdown runs before the server waits for handlers: a WebSocket would hold it up
        await hub.stop()

    app.cleanup_ctx.append(hub_ctx)
    app.on_shutdown.append(close_sockets)
    return app


def create_ws_app(main: web.Application) -> web.Application:
    """The documented WebSocket on its own port, sharing the main application's hub and auth."""
    surface = monitor.make_surface()
    app = monitor.make_ws_app(surface)
    if main[CONFIG].cors_origins:
        app.middlewares.insert(0, _cors_middleware(main[CONFIG].cors_origins))
    _common_state(app, main[ENGINE], main[CONFIG], main[VERIFIER], main[WS_HUB])
    app[SURFACES] = [surface]
    return app

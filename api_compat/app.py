"""The application factory: one aiohttp application carrying every API surface, plus the small
application that serves the StepFlow Monitor WebSocket on its own port."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web

from api_compat import access as access_checks
from api_compat import error_middleware, openapi
from api_compat.access import ACCESS, Access
from api_compat.auth import TokenVerifier
from api_compat.config import ApiConfig
from api_compat.cross_site import cross_site_middleware
from api_compat.executr import routes as executr
from api_compat.monitor import routes as monitor
from api_compat.opsconductor import routes as opsconductor
from api_compat.rustci import routes as rustci
from api_compat.state import CLOSE_STREAMS, CONFIG, ENGINE, STARTED_AT, SURFACES, VERIFIER, ServedEngine
from api_compat.surface import route


def _data_dir(engine: ServedEngine, config: ApiConfig) -> Path:
    return Path(config.data_dir) if config.data_dir is not None else Path(engine.data_dir)


def _common_state(app: web.Application, engine: ServedEngine, config: ApiConfig,
                  verifier: TokenVerifier | None) -> None:
    app[ENGINE] = engine
    app[CONFIG] = config
    app[VERIFIER] = verifier
    app[STARTED_AT] = time.monotonic()
    app[CLOSE_STREAMS] = []


def create_app(engine: ServedEngine, *, config: ApiConfig) -> web.Application:
    """The main application: every API surface on one router (each starts and ends its own streams:
    Monitor's WebSocket hub subscribes to the engine, and closes the sockets with 1001 on shutdown)."""
    config.check()
    verifier = (TokenVerifier(_data_dir(engine, config), failure_limit=config.auth_failure_limit)
                if config.auth_enabled else None)
    # outermost: a refused request reaches neither auth nor a handler (api_compat/cross_site.py);
    # then the one middleware that runs the checks and errors of the request's surface
    app = web.Application(client_max_size=config.max_json_bytes,
                          middlewares=[cross_site_middleware(config, config.host)])
    error_middleware.install(app)
    _common_state(app, engine, config, verifier)
    app[openapi.OPENAPI_CACHE] = {}

    jobs_surface = executr.make_surface()
    # OpsConductor before Monitor: its /api/executions/search, /serial/…, /branch/… and /bulk are
    # matched before Monitor's /api/executions/{execution_id}
    ops_surface = opsconductor.make_surface()
    surface = monitor.make_surface()
    runners_surface = rustci.make_surface()
    app[SURFACES] = [jobs_surface, runners_surface, ops_surface, surface]
    executr.install(app, jobs_surface)
    rustci.install(app, runners_surface)
    opsconductor.install(app, ops_surface)
    monitor.install(app, surface)
    route(app.router, surface, "GET", "/api/openapi.json", openapi.openapi_handler,
          "This document: every route of every API on this listener", "openapi",
          response={"description": "An OpenAPI 3.1 document", "content": {"application/json": {}}})
    # the next documented APIs (OpsConductor, RustCI runners, executr) go here, each as
    # `surface = x.make_surface(); app[SURFACES].append(surface); x.install(app, surface)`,
    # registered BEFORE Monitor's when their paths overlap `/api/executions/{execution_id}`.
    # Last: the credentials and rate limits of every surface (api_compat/access.py)
    access_checks.install(app, Access(_data_dir(engine, config), config, verifier))
    return app


def create_ws_app(main: web.Application) -> web.Application:
    """The documented WebSocket on its own port, sharing the main application's hub and auth."""
    surface = monitor.make_surface()
    app = monitor.make_ws_app(surface, main)
    app.middlewares.insert(0, cross_site_middleware(main[CONFIG], main[CONFIG].ws_host))
    error_middleware.install(app)
    _common_state(app, main[ENGINE], main[CONFIG], main[VERIFIER])
    app[SURFACES] = [surface]
    access_checks.install(app, main[ACCESS])
    return app

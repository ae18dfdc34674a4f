"""StepFlow Monitor's application state keys (the shared ones, the engine and the configuration,
are `api_compat.state`'s). Each surface keeps its own in its own package: no two surfaces share a
key by accident."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from api_compat.monitor.health import Probe
    from api_compat.monitor.list_cache import ListCache
    from api_compat.monitor.ws import WsHub
    from engine.model import Execution, Step

#: the WebSocket fan-out (shared by the main application and the WebSocket's own port)
WS_HUB: web.AppKey[WsHub] = web.AppKey("monitor.ws_hub")
#: the first page of `GET /api/executions`, cached until the store changes
LIST_CACHE: web.AppKey[ListCache] = web.AppKey("monitor.executions_list_cache")
#: the database and storage checks of `/api/health/status`, cached for a moment
PROBE: web.AppKey[Probe] = web.AppKey("monitor.health_probe")

#: what a handler read that the reference shape's reshaper uses too, so that it is not read twice:
#: every step of the execution `GET /api/executions/{id}` answers (branches included) ...
STEPS_READ: web.RequestKey[list[Step]] = web.RequestKey("monitor.steps_read")
#: ... and the execution a submission created
SUBMITTED: web.RequestKey[Execution] = web.RequestKey("monitor.submitted")

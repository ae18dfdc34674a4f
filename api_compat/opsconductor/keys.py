"""The OpsConductor surface's application state, and what it needs of the store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from engine.store import OpsRecords, Registry

if TYPE_CHECKING:
    from api_compat.opsconductor.scheduler import Scheduler
    from api_compat.opsconductor.ws import OpsWsHub


class OpsStore(OpsRecords, Registry, Protocol):
    """The engine's store as this surface uses it: its records, and the registry its targets are in."""


#: None when the engine has no such store (a test double): the routes answer 503
STORE: web.AppKey[OpsStore | None] = web.AppKey("opsconductor_store")
#: the targets of the engine's targets file (name -> its config), referred to by name
FILE_TARGETS: web.AppKey[dict[str, Any]] = web.AppKey("opsconductor_file_targets")
SCHEDULER: web.AppKey[Scheduler] = web.AppKey("opsconductor_scheduler")
WS_HUB: web.AppKey[OpsWsHub] = web.AppKey("opsconductor_ws_hub")

"""The RustCI surface's application state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from api_compat.sse import SseHub

if TYPE_CHECKING:
    from api_compat.rustci.desk import RunnerDesk
    from api_compat.rustci.ws import RunnerHub

DESK: web.AppKey[RunnerDesk] = web.AppKey("rustci_desk")
SSE = web.AppKey("rustci_sse", SseHub)
WS_HUB: web.AppKey[RunnerHub] = web.AppKey("rustci_ws")

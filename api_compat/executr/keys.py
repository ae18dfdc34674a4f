"""The executr surface's application state."""

from __future__ import annotations

from aiohttp import web

from api_compat.executr.metrics import JobMetrics

METRICS = web.AppKey("executr_metrics", JobMetrics)
#: seconds without a heartbeat after which a running job goes back to the queue (or fails)
HEARTBEAT_TIMEOUT = web.AppKey("executr_heartbeat_timeout", float)

"""Health and monitoring: /api/health, /status, /metrics, /database, /optimize."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from api_compat.monitor.envelope import now_iso, ok
from api_compat.monitor.keys import PROBE, WS_HUB
from api_compat.monitor.wire import iso
from api_compat.state import ENGINE, STARTED_AT
from engine.store import StoreStats

_MB = 1024 * 1024

try:
    VERSION = importlib.metadata.version("stepflow")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare tree
    VERSION = "0.0.0"


class Probe:
    """Whether the database answers and the data directory is writable, checked at most every few
    seconds, so that `/api/health` stays a sub-millisecond answer under load."""

    TTL = 2.0

    def __init__(self) -> None:
        self._at = -1e9
        self._lock = asyncio.Lock()
        self.database_ok = True
        self.storage_ok = True

    async def refresh(self, app: web.Application) -> None:
        if time.monotonic() - self._at < self.TTL:
            return
        async with self._lock:
            if time.monotonic() - self._at < self.TTL:
                return
            engine = app[ENGINE]
            try:
                # a point lookup of an id that cannot exist: the cheapest question the store answers
                await engine.get_execution("00000000-0000-0000-0000-000000000000")
                self.database_ok = True
            except Exception:
                self.database_ok = False
            self.storage_ok = os.access(engine.data_dir, os.W_OK | os.X_OK)
            self._at = time.monotonic()


def _uptime(app: web.Application) -> int:
    return int(time.monotonic() - app[STARTED_AT])


def _system(data_dir: Path) -> dict[str, Any]:
    try:
        disk = psutil.disk_usage(str(data_dir)).percent
    except OSError:
        disk = 0.0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        load = [0.0, 0.0, 0.0]
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_percent": psutil.virtual_memory().percent,
        "disk_usage_percent": disk,
        "load_average": load,
    }


def _metrics(app: web.Application, stats: StoreStats) -> dict[str, Any]:
    system = _system(app[ENGINE].data_dir)
    return {
        "timestamp": now_iso(),
        "database": {
            "database_size_bytes": stats.database_size_bytes,
            "database_size_mb": round(stats.database_size_bytes / _MB, 2),
            "table_counts": {
                "executions": stats.total_executions,
                "steps": stats.total_steps,
                "artifacts": stats.total_artifacts,
                "log_lines": stats.total_log_lines,
            },
            "wal_mode": stats.wal_mode,
            "cache_size": stats.cache_size,
            "storage_path": stats.storage_path,
        },
        "system": {
            "cpu_percent": system["cpu_percent"],
            "memory_percent": system["memory_percent"],
            "disk_usage_percent": system["disk_usage_percent"],
            # WebSocket clients: the HTTP connections that stay open
            "open_connections": app[WS_HUB].client_count,
        },
        "uptime_seconds": _uptime(app),
    }


async def health(request: web.Request) -> web.Response:
    app = request.app
    probe = app[PROBE]
    await probe.refresh(app)
    hub = app[WS_HUB]
    healthy = probe.database_ok and probe.storage_ok and hub.running
    return ok({
        "status": "healthy" if healthy else "degraded",
        "timestamp": now_iso(),
        "version": VERSION,
        "uptime_seconds": _uptime(app),
        "database": "connected" if probe.database_ok else "error",
        "websocket": "running" if hub.running else "stopped",
        "storage": "accessible" if probe.storage_ok else "inaccessible",
    })


async def status(request: web.Request) -> web.Response:
    app = request.app
    engine = app[ENGINE]
    hub = app[WS_HUB]
    try:
        stats: StoreStats | None = await engine.stats()
    except Exception:
        stats = None
    return ok({
        "system": _system(engine.data_dir),
        "database": {
            "status": "connected" if stats is not None else "error",
            "size_mb": round(stats.database_size_bytes / _MB, 2) if stats else 0.0,
            "wal_mode": bool(stats and stats.wal_mode.lower() == "wal"),
            # no `cache_hit_ratio`: see DatabaseStatus
        },
        "websocket": {
            "status": "running" if hub.running else "stopped",
            "connected_clients": hub.client_count,
            "total_messages": hub.total_messages,
        },
    })


async def metrics(request: web.Request) -> web.Response:
    stats = await request.app[ENGINE].stats()
    return ok(_metrics(request.app, stats))


def _stored_time(text: str | None) -> str | None:
    """The store's text (`...+00:00`) as every other timestamp of the API (RFC 3339, `Z`)."""
    return None if text is None else iso(datetime.fromisoformat(text))


async def database(request: web.Request) -> web.Response:
    stats = await request.app[ENGINE].stats()
    by = stats.by_status
    return ok({
        "total_executions": stats.total_executions,
        "running_executions": by.get("running", 0),
        "completed_executions": by.get("completed", 0),
        "failed_executions": by.get("failed", 0),
        "total_steps": stats.total_steps,
        "total_artifacts": stats.total_artifacts,
        "database_size_mb": round(stats.database_size_bytes / _MB, 2),
        "oldest_execution": _stored_time(stats.oldest_execution),
        "newest_execution": _stored_time(stats.newest_execution),
        "pending_executions": by.get("pending", 0),
        "cancelled_executions": by.get("cancelled", 0),
        "total_log_lines": stats.total_log_lines,
    })


async def optimize(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    operations = await engine.optimize()
    stats = await engine.stats()
    return ok({
        "status": "optimization_completed",
        "timestamp": now_iso(),
        "operations_performed": operations,
        "metrics": _metrics(request.app, stats),
    })

"""Admin and operations routes: statistics, active executors, health (the database checked), and
the Prometheus metrics."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from aiohttp import web

from api_compat.executr.keys import METRICS
from api_compat.executr.metrics import CONTENT_TYPE
from api_compat.executr.wire import PRIORITY_OF_LEVEL, Priority, priority_of, rfc3339
from api_compat.state import ENGINE
from engine.jobs import Jobs, job_fields
from engine.model import utcnow
from engine.store import QueueStatus

log = logging.getLogger(__name__)


def _jobs(request: web.Request) -> Jobs:
    return request.app[ENGINE].jobs


async def stats(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    counts = await jobs.counts()
    by_status = {s.value: 0 for s in QueueStatus}
    by_priority = {p.value: 0 for p in Priority}
    for c in counts:
        by_status[c.status.value] += c.count
        if c.status is QueueStatus.PENDING:
            by_priority[priority_of(c.priority).value] += c.count
    return web.json_response({
        "jobs_by_status": by_status,
        "pending_by_priority": by_priority,
        "active_executors": len(await jobs.executors()),
        "timestamp": rfc3339(utcnow()),
    })


async def executors(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    running = await jobs.running()
    answer: list[dict[str, Any]] = []
    seen: set[str] = set()
    done: Counter[str] = Counter()
    for item in running:
        worker = item.worker or ""
        if worker in seen:
            continue
        seen.add(worker)
        _page, done[worker] = await jobs.list_jobs(status=QueueStatus.COMPLETED, worker=worker, limit=1)
        answer.append({
            "executor_id": worker,
            "current_job_id": item.id,
            "job_type": str(job_fields(item).get("type", "")),
            "last_heartbeat": rfc3339(item.heartbeat_at or item.claimed_at),
            "jobs_completed": done[worker],
        })
    return web.json_response(answer)


async def health(request: web.Request) -> web.Response:
    try:
        await _jobs(request).healthy()
    except Exception as exc:  # any failure to read the store is an unhealthy database
        log.warning("health: the database cannot be read: %s", exc)
        return web.json_response({"status": "unhealthy", "database": "disconnected"}, status=503)
    return web.json_response({"status": "healthy", "database": "connected"})


async def metrics(request: web.Request) -> web.Response:
    jobs = _jobs(request)
    registry = request.app[METRICS]
    registry.set_queue(await jobs.counts(), {lvl: p.value for lvl, p in PRIORITY_OF_LEVEL.items()},
                       len(await jobs.executors()))
    response = web.Response(body=registry.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response

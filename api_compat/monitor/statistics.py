"""Ours, beyond the document: the two routes the reference web UI's dashboard calls
(`GET /api/executions/statistics`, `GET /api/executions/active`), with the field names it reads.

Registered before `/api/executions/{execution_id}` so that neither word is taken for an id."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from api_compat.monitor.envelope import ok, page
from api_compat.monitor.wire import execution_dict
from api_compat.state import ENGINE
from engine.model import Execution, ExecutionFilter, ExecutionStatus

#: per status; more active executions than this on one engine is not a dashboard's case
ACTIVE_LIMIT = 1000

_FINISHED = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)


class ExecutionStatistics(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total_executions: int
    #: pending + running
    active_now: int
    #: completed out of finished (completed, failed, cancelled), as the UI shows it: "66.7%"
    success_rate: str
    #: mean run time of finished executions, as the UI shows it: "2.5s", "3m 4s", "1h 2m"; "-" if none
    avg_duration: str
    # the same as numbers, and every status's count
    success_rate_percent: float | None
    avg_duration_seconds: float | None
    by_status: dict[str, int]


class StatisticsOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    statistics: ExecutionStatistics


def duration_text(seconds: float | None) -> str:
    """The reference UI's own duration format (its Formatters.duration)."""
    if seconds is None or seconds <= 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60)}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60)}m"


async def statistics(request: web.Request) -> web.Response:
    # counts and the mean duration come from SQL over the stored executions (Store.stats)
    stats = await request.app[ENGINE].stats()
    by_status = {s.value: stats.by_status.get(s.value, 0) for s in ExecutionStatus}
    finished = sum(by_status[s.value] for s in _FINISHED)
    rate = 100.0 * by_status[ExecutionStatus.COMPLETED.value] / finished if finished else None
    avg = stats.avg_duration_seconds
    return ok({"statistics": {
        "total_executions": stats.total_executions,
        "active_now": by_status[ExecutionStatus.PENDING.value] + by_status[ExecutionStatus.RUNNING.value],
        "success_rate": f"{rate or 0.0:.1f}%",
        "avg_duration": duration_text(avg),
        "success_rate_percent": None if rate is None else round(rate, 1),
        "avg_duration_seconds": None if avg is None else round(avg, 3),
        "by_status": by_status,
    }})


async def active(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    found: list[Execution] = []
    total = 0
    for status in (ExecutionStatus.PENDING, ExecutionStatus.RUNNING):
        rows, count = await engine.list_executions(ExecutionFilter(status=status, limit=ACTIVE_LIMIT))
        found += rows
        total += count
    # newest first, as GET /api/executions lists them
    found.sort(key=lambda e: e.created_at, reverse=True)
    return ok(page("executions", [execution_dict(e) for e in found], total, offset=0))


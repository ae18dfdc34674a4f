"""Figures over the stored executions, each a sum in SQL over one indexed table
(storage.opsconductor): a target's performance and history, the executions per period bucket, a
job's metrics.

Periods are the document's `24h`, `7d`, `30d`, `90d`; buckets (`hour`, `day`, `week` from Monday,
`month`) are UTC calendar units, from the one holding the period's start to the one holding now,
every one present (empty ones with zeros); the totals are their sums. `date` is the bucket's start:
`2025-01-08T10:00:00Z` by hour, `2025-01-08` by day or week, `2025-01` by month. An execution
counts in the bucket of when it was started (asked for). `success_rate` is completed over ended
(completed, failed, cancelled), in percent with two decimals; `average_duration` is in seconds over
the ended ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api_compat.opsconductor import serials
from api_compat.opsconductor.errors import OpsError
from api_compat.opsconductor.targets import store_of
from api_compat.opsconductor.wire import rate, rfc3339
from api_compat.query_params import QueryParams
from engine.store.opsconductor import TARGET_KIND, Outcomes

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30),
           "90d": timedelta(days=90)}
GROUPS = ("hour", "day", "week", "month")
RECENT = 10


class PerformanceQuery(BaseModel):
    days: int = Field(30, ge=1, le=3650)


class HistoryQuery(BaseModel):
    limit: int = Field(20, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=2**62)


#: an empty value is the default, as a form's empty field
Period = Literal["24h", "7d", "30d", "90d", ""]


class AnalyticsQuery(BaseModel):
    period: Period = "7d"
    group_by: Literal["hour", "day", "week", "month", ""] = "day"


class MetricsQuery(BaseModel):
    period: Period = "30d"


def _duration(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _counts(o: Outcomes) -> dict[str, Any]:
    return {"total_executions": o.total, "successful_executions": o.completed, "failed_executions": o.failed,
            "success_rate": rate(o.completed, o.finished), "average_duration": _duration(o.average_duration)}


async def _target(request: web.Request) -> Any:
    serial = serials.TARGET.check(request.match_info["target_serial"])
    entry = await store_of(request).get_registered(TARGET_KIND, serial=serial)
    if entry is None:
        raise OpsError(404, f"no target {serial}")
    return entry


async def target_performance(request: web.Request) -> web.Response:
    entry = await _target(request)
    days = QueryParams(request.query, error=OpsError).integer("days", 30, minimum=1, maximum=3650)
    store = store_of(request)
    outcomes = await store.target_outcomes(entry.id, datetime.now(UTC) - timedelta(days=days))
    recent, _total = await store.target_history(entry.id, limit=RECENT, offset=0)
    return web.json_response({
        "target_serial": entry.serial, "target_name": entry.name, "period_days": days, **_counts(outcomes),
        "recent_executions": [{
            "branch_serial": h.branch.serial, "execution_serial": serials.execution_of(h.branch.serial),
            "job_serial": serials.job_of(h.branch.serial), "status": h.branch.status,
            "duration": _duration(h.branch.duration), "started_at": rfc3339(h.branch.started_at)}
            for h in recent],
    })


async def target_history(request: web.Request) -> web.Response:
    entry = await _target(request)
    q = QueryParams(request.query, error=OpsError)
    limit = q.integer("limit", 20, minimum=1, maximum=1000)
    offset = q.integer("offset", 0, minimum=0, maximum=2**62)
    entries, total = await store_of(request).target_history(entry.id, limit=limit, offset=offset)
    return web.json_response({
        "target_serial": entry.serial, "total": total, "limit": limit, "offset": offset,
        "executions": [{
            "branch_serial": h.branch.serial, "execution_serial": serials.execution_of(h.branch.serial),
            "job_serial": serials.job_of(h.branch.serial), "job_name": h.job_name, "status": h.branch.status,
            "started_at": rfc3339(h.branch.started_at), "completed_at": rfc3339(h.branch.completed_at),
            "exit_code": h.branch.exit_code} for h in entries],
    })


def _floor(at: datetime, unit: str) -> datetime:
    at = at.replace(minute=0, second=0, microsecond=0)
    if unit == "hour":
        return at
    at = at.replace(hour=0)
    if unit == "day":
        return at
    if unit == "week":
        return at - timedelta(days=at.weekday())
    return at.replace(day=1)


def bucket_span(now: datetime, period: timedelta, unit: str) -> tuple[datetime, int]:
    """The first bucket's start and how many buckets there are, to the one holding `now`."""
    start, last = _floor(now - period, unit), _floor(now, unit)
    if unit == "month":
        return start, (last.year - start.year) * 12 + last.month - start.month + 1
    step = {"hour": 3600, "day": 86400, "week": 7 * 86400}[unit]
    return start, int((last - start).total_seconds()) // step + 1


#: a bucket's `date`: the start's ISO text cut short (what strftime would make, without its cost)
_LABEL = {"hour": lambda iso: iso[:13] + ":00:00Z", "day": lambda iso: iso[:10], "week": lambda iso: iso[:10],
          "month": lambda iso: iso[:7]}


def _period(q: QueryParams, default: str) -> tuple[str, timedelta]:
    period = q.choice("period", tuple(PERIODS)) or default
    return period, PERIODS[period]


async def execution_analytics(request: web.Request) -> web.Response:
    q = QueryParams(request.query, error=OpsError)
    period, length = _period(q, "7d")
    unit = q.choice("group_by", GROUPS) or "day"
    start, count = bucket_span(datetime.now(UTC), length, unit)
    counted = await store_of(request).execution_buckets(start, unit, count)
    total = Outcomes(sum(o.total for _, o in counted), sum(o.completed for _, o in counted),
                     sum(o.failed for _, o in counted), sum(o.other_finished for _, o in counted))
    label = _LABEL[unit]
    return web.json_response({
        "period": period, "group_by": unit, "start": rfc3339(start),
        "total_executions": total.total, "successful_executions": total.completed,
        "failed_executions": total.failed, "success_rate": rate(total.completed, total.finished),
        "data": [{"date": label(iso), "executions": o.total, "successful": o.completed, "failed": o.failed,
                  "success_rate": rate(o.completed, o.finished) if o.total else 0.0} for iso, o in counted],
    })


async def job_metrics(request: web.Request) -> web.Response:
    serial = serials.JOB.check(request.match_info["job_serial"])
    store = store_of(request)
    job = await store.get_ops_job(serial=serial)
    if job is None:
        raise OpsError(404, f"no job {serial}")
    period, length = _period(QueryParams(request.query, error=OpsError), "30d")
    since = datetime.now(UTC) - length
    outcomes = await store.execution_outcomes(since, job_id=job.id)
    per_target = await store.job_target_outcomes(job.id, since)
    return web.json_response({
        "job_serial": job.serial, "job_name": job.name, "period": period, **_counts(outcomes),
        "target_performance": [{
            "target_serial": t.target_serial, "target_name": t.target_name, "executions": t.outcomes.total,
            "success_rate": rate(t.outcomes.completed, t.outcomes.finished),
            "average_duration": _duration(t.outcomes.average_duration)} for t in per_target],
    })

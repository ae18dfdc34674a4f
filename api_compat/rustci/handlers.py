"""The runner API's handlers (routes.py adds them with their documentation)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from api_compat.query_params import QueryParams
from api_compat.request_parsing import read_json_body, validate_object
from api_compat.rustci import views
from api_compat.rustci.desk import RunnerDesk
from api_compat.rustci.errors import RustciError, refuse_body
from api_compat.rustci.jobs_view import job_json, job_status
from api_compat.rustci.keys import DESK, SSE, WS_HUB
from api_compat.rustci.wire import (
    LEVEL_RANK,
    RunnerBulkOperation,
    RunnerBulkRequest,
    RunnerConfigUpdate,
    RunnerJobRequest,
    RunnerJobStatus,
    RunnerLogLevel,
    RunnerRegisterRequest,
    RunnerStatus,
    RunnerStopRequest,
    RunnerType,
    RunnerUpdateRequest,
    rfc3339,
)
from engine.errors import EngineError
from engine.store import RegistryEntry

M = TypeVar("M", bound=BaseModel)


def _desk(request: web.Request) -> RunnerDesk:
    return request.app[DESK]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def validate(model: type[M], value: Any) -> M:
    return validate_object(model, value, refuse_body)


async def _body(request: web.Request, model: type[M], *, optional: bool = False) -> M:
    if optional and not request.can_read_body:
        return model.model_validate({})
    return validate(model, await read_json_body(request, error=RustciError))


def _query(request: web.Request) -> QueryParams:
    return QueryParams(request.query, error=RustciError)


def _runner_id(request: web.Request) -> str:
    return request.match_info["runner_id"]


# -- runners ----------------------------------------------------------------------------------------
async def register(request: web.Request) -> web.Response:
    req = await _body(request, RunnerRegisterRequest)
    runner_id, token = await _desk(request).register(req)
    return _json({"success": True, "runner_id": runner_id, "registration_token": token,
                  "message": "Runner registered successfully"}, 201)


def _matches(entry: RegistryEntry, status: str | None, kind: str | None, tags: list[str]) -> bool:
    data = entry.data
    if status is not None and data.get("status") != status:
        return False
    if kind is not None and data.get("type") != kind:
        return False
    return all(tag in (data.get("tags") or []) for tag in tags)


def _tags(raw: str | None) -> list[str]:
    return [t.strip() for t in (raw or "").split(",") if t.strip()]


async def list_runners(request: web.Request) -> web.Response:
    q = _query(request)
    status, kind = q.choice("status", RunnerStatus), q.choice("type", RunnerType)
    tags = _tags(q.text("tags"))
    limit, offset = q.integer("limit", 50, minimum=1, maximum=1000), q.integer("offset", 0, minimum=0)
    desk = _desk(request)
    found = [e for e in await desk.all() if _matches(e, status and status.value, kind and kind.value, tags)]
    page = found[offset:offset + limit]
    return _json({"runners": [views.runner_json(desk, e) for e in page], "total_count": len(found),
                  "has_more": offset + len(page) < len(found)})


async def get_runner(request: web.Request) -> web.Response:
    desk = _desk(request)
    return _json(await views.detail(desk, await desk.get(_runner_id(request))))


async def update_runner(request: web.Request) -> web.Response:
    req = await _body(request, RunnerUpdateRequest)
    await _desk(request).update(_runner_id(request), req)
    return _json({"success": True, "message": "Runner updated successfully"})


async def delete_runner(request: web.Request) -> web.Response:
    force = _query(request).boolean("force", False)
    cancelled = await _desk(request).delete(_runner_id(request), force=force)
    return _json({"success": True, "message": "Runner deleted successfully", "cancelled_jobs": cancelled})


# -- status, health, metrics ------------------------------------------------------------------------
async def runner_status(request: web.Request) -> web.Response:
    desk = _desk(request)
    return _json(await views.status(desk, await desk.get(_runner_id(request))))


async def runner_health(request: web.Request) -> web.Response:
    desk = _desk(request)
    return _json(await views.health(desk, await desk.get(_runner_id(request))))


async def runner_metrics(request: web.Request) -> web.Response:
    q = _query(request)
    period = q.choice("period", list(views.PERIODS), "24h") or "24h"
    resolution = q.choice("resolution", list(views.RESOLUTIONS), "5m") or "5m"
    desk = _desk(request)
    entry = await desk.get(_runner_id(request))
    return _json(views.metrics(desk.activity, entry, await desk.jobs(entry), period, resolution))


# -- jobs -------------------------------------------------------------------------------------------
async def submit_job(request: web.Request) -> web.Response:
    runner_id = _runner_id(request)
    job = await _body(request, RunnerJobRequest)
    execution, eta = await _desk(request).submit(runner_id, job)
    return _json({"success": True, "job_id": f"job_{execution.id}", "runner_id": runner_id,
                  "status": job_status(execution).value, "estimated_start_time": rfc3339(eta),
                  "execution_id": execution.id}, 201)


async def list_jobs(request: web.Request) -> web.Response:
    q = _query(request)
    status = q.choice("status", RunnerJobStatus)
    limit, offset = q.integer("limit", 50, minimum=1, maximum=1000), q.integer("offset", 0, minimum=0)
    desk = _desk(request)
    runner_id = _runner_id(request)
    jobs = [e for e in await desk.jobs(await desk.get(runner_id)) if status is None or job_status(e) is status]
    return _json({"runner_id": runner_id, "jobs": [job_json(e) for e in jobs[offset:offset + limit]],
                  "total_count": len(jobs)})


async def get_job(request: web.Request) -> web.Response:
    execution = await _desk(request).job(_runner_id(request), request.match_info["job_id"])
    return _json(job_json(execution))


async def cancel_job(request: web.Request) -> web.Response:
    desk = _desk(request)
    await desk.cancel_job(_runner_id(request), request.match_info["job_id"])
    return _json({"success": True, "message": "Job cancellation requested",
                  "job_id": request.match_info["job_id"]})


# -- configuration and control ----------------------------------------------------------------------
async def get_config(request: web.Request) -> web.Response:
    entry = await _desk(request).get(_runner_id(request))
    return _json({"runner_id": entry.name, "configuration": entry.data.get("config") or {},
                  "last_updated": entry.data.get("config_updated_at")})


async def put_config(request: web.Request) -> web.Response:
    update = await _body(request, RunnerConfigUpdate)
    restart = await _desk(request).set_config(_runner_id(request), update)
    return _json({"success": True, "message": "Configuration updated successfully", "restart_required": restart})


async def start_runner(request: web.Request) -> web.Response:
    await _desk(request).start(_runner_id(request))
    return _json({"success": True, "message": "Runner started successfully", "status": "starting"})


async def stop_runner(request: web.Request) -> web.Response:
    body = await _body(request, RunnerStopRequest, optional=True)
    await _desk(request).stop(_runner_id(request), graceful=body.graceful, timeout=body.timeout, reason=body.reason)
    return _json({"success": True, "message": "Runner stopped successfully", "status": "stopped"})


async def restart_runner(request: web.Request) -> web.Response:
    body = await _body(request, RunnerStopRequest, optional=True)
    await _desk(request).restart(_runner_id(request), graceful=body.graceful, timeout=body.timeout)
    return _json({"success": True, "message": "Runner restart initiated", "status": "restarting"})


# -- logs -------------------------------------------------------------------------------------------
async def runner_logs(request: web.Request) -> web.StreamResponse:
    q = _query(request)
    since, until = q.timestamp("since"), q.timestamp("until")
    level = q.choice("level", RunnerLogLevel)
    limit = q.integer("limit", 1000, minimum=1, maximum=10_000)
    follow = q.boolean("follow", False)
    desk = _desk(request)
    runner_id = _runner_id(request)
    await desk.get(runner_id)
    rank = LEVEL_RANK[level] if level is not None else 0
    entries = [e for e in desk.activity.logs.get(runner_id, ())
               if (since is None or e["_at"] >= since) and (until is None or e["_at"] <= until)
               and LEVEL_RANK.get(RunnerLogLevel(e["level"]), 1) >= rank]
    shown = [{k: v for k, v in e.items() if k != "_at"} for e in entries[-limit:]]
    if follow and "text/event-stream" in request.headers.get("Accept", ""):
        async with request.app[SSE].open(request, runner_id) as stream:
            for entry in shown:
                stream.offer(json.dumps(entry), event="log")
            await stream.run()
        return stream.response
    return _json({"runner_id": runner_id, "logs": shown, "total_count": len(entries),
                  "has_more": len(entries) > len(shown)})


# -- bulk, WebSocket ---------------------------------------------------------------------------------
async def _bulk_one(desk: RunnerDesk, op: RunnerBulkOperation, runner_id: str, data: dict[str, Any]) -> None:
    if op is RunnerBulkOperation.UPDATE_CONFIG:
        await desk.set_config(runner_id, validate(RunnerConfigUpdate, data))
    elif op is RunnerBulkOperation.START:
        await desk.start(runner_id)
    elif op is RunnerBulkOperation.STOP:
        stop = validate(RunnerStopRequest, data)
        await desk.stop(runner_id, graceful=stop.graceful, timeout=stop.timeout, reason=stop.reason)
    elif op is RunnerBulkOperation.RESTART:
        stop = validate(RunnerStopRequest, data)
        await desk.restart(runner_id, graceful=stop.graceful, timeout=stop.timeout)
    else:
        await desk.delete(runner_id, force=bool(data.get("force", False)))


async def bulk(request: web.Request) -> web.Response:
    req = await _body(request, RunnerBulkRequest)
    if req.operation is RunnerBulkOperation.UPDATE_CONFIG:
        validate(RunnerConfigUpdate, req.data)  # refused whole before any runner changes
    desk = _desk(request)
    f = req.filters
    chosen = [e for e in await desk.all()
              if _matches(e, f.status and f.status.value, f.type and f.type.value, f.tags)]
    results: list[dict[str, Any]] = []
    for entry in chosen:
        try:
            await _bulk_one(desk, req.operation, entry.name, req.data)
        except (RustciError, EngineError) as exc:
            results.append({"runner_id": entry.name, "success": False, "error": exc.message})
        else:
            results.append({"runner_id": entry.name, "success": True})
    ok = sum(1 for r in results if r["success"])
    return _json({"success": ok == len(results), "affected_runners": ok, "results": results})


async def runners_ws(request: web.Request) -> web.StreamResponse:
    return await request.app[WS_HUB].serve(request)

"""The RustCI runner API's routes under /api/runners (specs/rustci-runner-api.md), `make_surface()`
and `install(app, surface)` for `api_compat.app`, and what runs beside them: the engine's events
followed (logs, SSE, WebSocket) and the metrics sampler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api_compat.principal import STANDARD, Principal
from api_compat.rate_limits import RUSTCI_POLICY
from api_compat.rustci import handlers as h
from api_compat.rustci import worker_routes
from api_compat.rustci.activity import Activity
from api_compat.rustci.desk import RunnerDesk
from api_compat.rustci.errors import RustciErrorBody, fail, surface_errors
from api_compat.rustci.keys import DESK, SSE, WS_HUB
from api_compat.rustci.wire import (
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
)
from api_compat.rustci.ws import RunnerHub
from api_compat.sse import SseHub
from api_compat.state import CLOSE_STREAMS, CONFIG, ENGINE
from api_compat.surface import Surface, route

log = logging.getLogger(__name__)
PREFIX = "/api/runners"


class RunnerListQuery(BaseModel):
    #: an empty value is no filter
    status: RunnerStatus | Literal[""] | None = None
    type: RunnerType | Literal[""] | None = None
    tags: str | None = Field(None, description="comma-separated: runners having every one")
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0)


class RunnerDeleteQuery(BaseModel):
    force: bool = False


class RunnerMetricsQuery(BaseModel):
    period: Literal["1h", "24h", "7d", "30d", ""] = "24h"
    resolution: Literal["1m", "5m", "1h", ""] = "5m"


class RunnerJobsQuery(BaseModel):
    status: RunnerJobStatus | Literal[""] | None = None
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0)


class RunnerLogsQuery(BaseModel):
    since: str | None = Field(None, description="ISO 8601", json_schema_extra={"format": "date-time"})
    until: str | None = Field(None, description="ISO 8601", json_schema_extra={"format": "date-time"})
    level: RunnerLogLevel | Literal[""] | None = None
    limit: int = Field(1000, ge=1, le=10_000)
    follow: bool = Field(False, description="with `Accept: text/event-stream`: Server-Sent Events until the client leaves")


def _obj(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {}}}


def make_surface() -> Surface:
    # the document: a Bearer JWT or an X-API-Key (when the listener's auth is on), and its request
    # limits (registration per address, status and jobs per runner, bulk per user)
    return Surface(name="rustci", title="RustCI runners", error_model=RustciErrorBody, prefixes=(PREFIX,),
                   refusal=fail, api_key=True, rate_policy=RUSTCI_POLICY, own_credential=runner_credential,
                   errors=surface_errors())


def runner_credential(request: web.Request, presented: str) -> Principal | None:
    """A runner's registration token (from its registration's answer) opens that runner's own
    routes (`/api/runners/{runner_id}/…`), as a bearer token or an X-API-Key, and no other."""
    desk = request.app.get(DESK)
    runner_id = request.match_info.get("runner_id")
    if desk is None or runner_id is None or desk.token_owner(presented) != runner_id:
        return None
    return Principal(user=runner_id, role=STANDARD, via="runner_token")


def install(app: web.Application, surface: Surface) -> None:
    r, p = app.router, PREFIX
    t_run, t_jobs, t_ctl, t_mon = "rustci runners", "rustci jobs", "rustci control", "rustci monitoring"
    one = f"{p}/{{runner_id}}"
    route(r, surface, "GET", f"{p}/ws", h.runners_ws, "WebSocket: runner_status_change and job events", t_mon,
          websocket=True, response={"description": "Switching to the WebSocket protocol"}, status=101,
          errors=(400, 503))
    route(r, surface, "POST", f"{p}/register", h.register, "Register a runner", t_run, body=RunnerRegisterRequest,
          response=_obj("runner_id and registration_token"), status=201, errors=(400, 422), rate_limit="registration")
    route(r, surface, "POST", p, h.register, "Register a runner (as /register)", t_run, body=RunnerRegisterRequest,
          response=_obj("runner_id and registration_token"), status=201, errors=(400, 422),
          operation_id="register_runner_root", rate_limit="registration")
    route(r, surface, "GET", p, h.list_runners, "List runners (filters, pagination)", t_run, query=RunnerListQuery,
          response=_obj("runners, total_count, has_more"), errors=(400,))
    route(r, surface, "POST", f"{p}/bulk", h.bulk, "An operation on every runner the filters select", t_ctl,
          body=RunnerBulkRequest, response=_obj("affected_runners and per-runner results"), errors=(400,),
          rate_limit="bulk")
    route(r, surface, "GET", one, h.get_runner, "A runner with its load and statistics", t_run,
          response=_obj("The runner"), errors=(404,))
    route(r, surface, "PUT", one, h.update_runner, "Update a runner's name, capabilities, metadata, tags", t_run,
          body=RunnerUpdateRequest, response=_obj("success"), errors=(400, 404))
    route(r, surface, "DELETE", one, h.delete_runner, "Unregister (409 with active jobs unless force=true)", t_run,
          query=RunnerDeleteQuery, response=_obj("success"), errors=(404, 409))
    route(r, surface, "GET", f"{one}/status", h.runner_status, "Status and load", t_mon, response=_obj("status"),
          errors=(404,), rate_limit="status")
    route(r, surface, "GET", f"{one}/health", h.runner_health, "Health checks (Docker daemon, a worker's last heartbeat, disk, memory)", t_mon,
          response=_obj("health"), errors=(404,), rate_limit="status")
    route(r, surface, "GET", f"{one}/metrics", h.runner_metrics, "Sampled cpu, memory, active jobs", t_mon,
          query=RunnerMetricsQuery, response=_obj("metrics"), errors=(400, 404))
    route(r, surface, "POST", f"{one}/jobs", h.submit_job, "Submit a job (queued per runner)", t_jobs,
          body=RunnerJobRequest, response=_obj("job_id, status, estimated_start_time"), status=201,
          errors=(400, 404, 409), rate_limit="jobs")
    route(r, surface, "GET", f"{one}/jobs", h.list_jobs, "The runner's jobs, newest first", t_jobs,
          query=RunnerJobsQuery, response=_obj("jobs"), errors=(400, 404))
    route(r, surface, "GET", f"{one}/jobs/{{job_id}}", h.get_job, "One job (ours)", t_jobs, response=_obj("job"),
          errors=(404,))
    route(r, surface, "POST", f"{one}/jobs/{{job_id}}/cancel", h.cancel_job, "Cancel a queued or running job (ours)",
          t_jobs, response=_obj("success"), errors=(404, 409))
    route(r, surface, "GET", f"{one}/config", h.get_config, "The runner's configuration", t_ctl,
          response=_obj("configuration"), errors=(404,))
    route(r, surface, "PUT", f"{one}/config", h.put_config, "Update the configuration", t_ctl, body=RunnerConfigUpdate,
          response=_obj("success, restart_required"), errors=(400, 404))
    route(r, surface, "POST", f"{one}/start", h.start_runner, "Start a stopped runner", t_ctl,
          response=_obj("status starting"), errors=(404,))
    route(r, surface, "POST", f"{one}/stop", h.stop_runner, "Stop (graceful: running jobs get `timeout` s)", t_ctl,
          body=RunnerStopRequest, response=_obj("status stopped"), errors=(400, 404))
    route(r, surface, "POST", f"{one}/restart", h.restart_runner, "Restart", t_ctl, body=RunnerStopRequest,
          response=_obj("status restarting"), errors=(400, 404))
    route(r, surface, "GET", f"{one}/logs", h.runner_logs, "Logs; follow=true with Accept: text/event-stream: SSE",
          t_mon, query=RunnerLogsQuery, response={"description": "logs (JSON), or an event stream",
                                            "content": {"application/json": {}, "text/event-stream": {}}},
          errors=(400, 404))
    worker_routes.install(app, surface)
    sse = app[SSE] = SseHub()
    sse.install(app)
    hub = app[WS_HUB] = RunnerHub()
    app[CLOSE_STREAMS].append(hub.stop)
    app.on_shutdown.append(lambda _app: hub.stop())
    app.cleanup_ctx.append(_running)


async def _running(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    registry = getattr(engine, "store", None)
    if registry is None or not hasattr(registry, "list_registered"):  # a test double without a store
        yield
        return
    config = app[CONFIG]
    data_dir = Path(config.data_dir) if config.data_dir is not None else Path(engine.data_dir)
    activity = Activity(app[SSE])
    hub = app[WS_HUB]
    activity.broadcast = hub.publish
    desk = app[DESK] = RunnerDesk(engine, registry, data_dir, activity)
    workers = getattr(engine, "workers", None)
    if workers is not None:  # a worker runner's silent worker: as long as an executr job's
        workers.stale_after = config.executr_heartbeat_timeout
    await desk.load()
    await hub.start()
    tasks = [asyncio.create_task(activity.follow_engine(engine), name="rustci-events"),
             asyncio.create_task(activity.sample_forever(desk.runner_ids), name="rustci-sampler")]
    yield
    await desk.close()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task

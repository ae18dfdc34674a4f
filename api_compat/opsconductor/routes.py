"""The OpsConductor routes (specs/opsconductor-api.md), `make_surface()` and `install(app, surface)`
for `api_compat.app`: registered before StepFlow Monitor's, so that `/api/executions/search`,
`/serial/…`, `/branch/…` and `/bulk` are matched before Monitor's `/api/executions/{execution_id}`.

On start: the targets file's targets (and `local`) are imported into the registry, the scheduler
starts the jobs whose time came, and the WebSocket hub follows the engine's events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from api_compat.opsconductor import analytics, jobs, lookups, serials, targets, ws
from api_compat.opsconductor.errors import ErrorBody, fail, surface_errors
from api_compat.opsconductor.keys import FILE_TARGETS, SCHEDULER, STORE, WS_HUB
from api_compat.opsconductor.launch import start_execution
from api_compat.opsconductor.paging import PageQuery
from api_compat.opsconductor.scheduler import Scheduler
from api_compat.opsconductor.wire import (
    TARGET_CREATE_SCHEMA,
    BulkLookup,
    ExecuteBody,
    JobCreate,
    TargetFields,
)
from api_compat.rate_limits import OPSCONDUCTOR_POLICY
from api_compat.state import CLOSE_STREAMS, CONFIG, ENGINE
from api_compat.surface import Surface, route
from engine.store.opsconductor import OpsJob

_JSON: dict[str, Any] = {"content": {"application/json": {}}}
_JOB_ID = {"type": "string", "pattern": r"^([0-9]{1,18}|J[0-9]{8,})$", "description": "an id, or a job serial"}
_TARGET_ID = {"type": "string", "pattern": r"^([0-9]{1,18}|T[0-9]{8,})$",
              "description": "an id, or a target serial"}


def _serial(kind: serials.SerialKind) -> dict[str, dict[str, Any]]:
    return {kind.field: {"type": "string", "pattern": f"^{kind.pattern.pattern}$", "example": kind.example}}
WS_DOC = {"description": "Switching to the WebSocket protocol: execution_started, branch_completed, "
                         "execution_completed (see api_compat/opsconductor/ws.py)"}


def _answer(description: str) -> dict[str, Any]:
    return {"description": description, **_JSON}


def make_surface() -> Surface:
    # the document: a Bearer JWT on every route (even when the listener's own auth is off), and
    # requests limited per user by role (100/minute standard, 500/minute administrator)
    return Surface(name="opsconductor", title="OpsConductor", error_model=ErrorBody,
                   prefixes=("/api/jobs", "/api/targets", "/api/analytics", "/ws/executions"), refusal=fail,
                   auth_always=True, rate_policy=OPSCONDUCTOR_POLICY, errors=surface_errors())


def install(app: web.Application, surface: Surface) -> None:
    r = app.router
    t_jobs, t_ex, t_targets, t_an, t_ws = ("opsconductor jobs", "opsconductor executions", "opsconductor targets",
                                          "opsconductor analytics", "opsconductor websocket")
    route(r, surface, "POST", "/api/jobs", jobs.create_job, "Create a job (future scheduled_at: it waits)", t_jobs,
          body=JobCreate, response=_answer("The job"), status=201, errors=(400, 404, 422))
    route(r, surface, "GET", "/api/jobs", jobs.list_jobs, "List jobs (pagination block)", t_jobs,
          query=jobs.ListJobsQuery, response=_answer("{data, pagination}"), errors=(400,))
    route(r, surface, "GET", "/api/jobs/{job_id}", jobs.get_job, "A job, by id or serial", t_jobs,
          response=_answer("The job"), errors=(404, 422), path_params={"job_id": _JOB_ID})
    route(r, surface, "GET", "/api/jobs/{job_id}/executions", jobs.job_executions,
          "A job's executions with their branches, newest first", t_jobs, query=jobs.ExecutionsQuery,
          response=_answer("Executions"),
          errors=(404, 422), path_params={"job_id": _JOB_ID})
    route(r, surface, "POST", "/api/jobs/{job_id}/execute", jobs.execute_job,
          "Run a job on targets: an execution J….NNNN, a branch J….NNNN.NNNN per target", t_jobs,
          body=ExecuteBody, response=_answer("The execution with its branches"), status=201,
          errors=(400, 404, 422, 503), path_params={"job_id": _JOB_ID})

    # before Monitor's /api/executions/{execution_id}
    route(r, surface, "GET", "/api/executions/search", lookups.search,
          "Search executions and branches by serial, job name or target name", t_ex, query=lookups.SearchQuery,
          response=_answer("{query, type, limit, total, results}"), errors=(400,))
    route(r, surface, "POST", "/api/executions/bulk", lookups.bulk, "Look up executions and branches by serial",
          t_ex, body=BulkLookup, response=_answer("{results, not_found}"), errors=(400, 422))
    route(r, surface, "GET", "/api/executions/serial/{execution_serial}", lookups.execution_by_serial,
          "An execution by serial, with its job and branches", t_ex, response=_answer("The execution"),
          errors=(404, 422), path_params=_serial(serials.EXECUTION))
    route(r, surface, "GET", "/api/executions/branch/{branch_serial}", lookups.branch_by_serial,
          "A branch by serial, with its output, error, exit code and target", t_ex, response=_answer("The branch"),
          errors=(404, 422), path_params=_serial(serials.BRANCH))

    route(r, surface, "POST", "/api/targets", targets.create_target, "Ours: register a target", t_targets,
          body=TARGET_CREATE_SCHEMA, response=_answer("The target"), status=201, errors=(400, 409, 422),
          role="administrator")
    route(r, surface, "GET", "/api/targets", targets.list_targets, "Ours: list targets (pagination block)",
          t_targets, query=PageQuery, response=_answer("{data, pagination}"), errors=(400,))
    route(r, surface, "GET", "/api/targets/{target_id}", targets.get_target, "Ours: a target, by id or serial",
          t_targets, response=_answer("The target"), errors=(404, 422), path_params={"target_id": _TARGET_ID})
    route(r, surface, "PATCH", "/api/targets/{target_id}", targets.update_target,
          "Ours: change a target created over the API (not its name)", t_targets, body=TargetFields,
          response=_answer("The target"), errors=(400, 404, 409, 422), path_params={"target_id": _TARGET_ID})
    route(r, surface, "DELETE", "/api/targets/{target_id}", targets.delete_target,
          "Ours: delete a target (409 while it has pending or running branches)", t_targets, status=204,
          errors=(404, 409, 422), path_params={"target_id": _TARGET_ID}, role="administrator")
    route(r, surface, "GET", "/api/targets/{target_serial}/performance", analytics.target_performance,
          "A target's success rate, durations and recent branches over `days`", t_targets,
          query=analytics.PerformanceQuery, response=_answer("Performance"), errors=(400, 404, 422),
          path_params=_serial(serials.TARGET))
    route(r, surface, "GET", "/api/targets/{target_serial}/executions", analytics.target_history,
          "A target's branches, newest first", t_targets, query=analytics.HistoryQuery,
          response=_answer("History"), errors=(400, 404, 422), path_params=_serial(serials.TARGET))

    route(r, surface, "GET", "/api/analytics/executions", analytics.execution_analytics,
          "Executions per hour, day, week or month over a period (empty buckets too)", t_an,
          query=analytics.AnalyticsQuery, response=_answer("Analytics"), errors=(400,))
    route(r, surface, "GET", "/api/analytics/jobs/{job_serial}/metrics", analytics.job_metrics,
          "A job's executions over a period, and per target", t_an, query=analytics.MetricsQuery,
          response=_answer("Metrics"), errors=(400, 404, 422), path_params=_serial(serials.JOB))

    route(r, surface, "GET", "/ws/executions", ws.websocket_handler, "Execution events (WebSocket)", t_ws,
          websocket=True, response=WS_DOC, status=101, errors=(400, 503))

    engine = app[ENGINE]
    store = getattr(engine, "store", None)
    app[STORE] = store if hasattr(store, "begin_ops_execution") else None
    app[FILE_TARGETS] = dict(getattr(getattr(engine, "config", None), "targets", None) or {})
    hub = app[WS_HUB] = ws.OpsWsHub(engine, client_queue=app[CONFIG].ws_client_queue)
    app.cleanup_ctx.append(_running)

    async def close_sockets(app: web.Application | None = None) -> None:
        await hub.stop()

    app.on_shutdown.append(close_sockets)
    app[CLOSE_STREAMS].append(close_sockets)


async def _running(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    hub = app[WS_HUB]
    await hub.start()
    scheduler = None
    file_targets = app[FILE_TARGETS]  # read first: as an argument, mypy infers the key's type
    if store is not None:
        await targets.import_file_targets(store, file_targets)

        async def run(job: OpsJob) -> object:
            assert store is not None
            return await start_execution(app[ENGINE], store, file_targets, job, job.target_ids)

        scheduler = app[SCHEDULER] = Scheduler(store, run)
        scheduler.start()
    yield
    if scheduler is not None:
        await scheduler.stop()
    await hub.stop()

"""The StepFlow Monitor API's routes (specs/stepflow-monitor-api.md): REST under /api, the WebSocket
at /ws and on its own port; `make_surface()` and `install(app, surface)` for `api_compat.app`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from api_compat.monitor import artifacts, executions, health, list_cache, reference_shape, statistics, ws
from api_compat.monitor.envelope import fail
from api_compat.monitor.errors import surface_errors
from api_compat.monitor.keys import PROBE, WS_HUB
from api_compat.monitor.reference_ws import ReferenceWsHub
from api_compat.monitor.schemas import (
    UPLOAD_SCHEMA,
    ArtifactDetail,
    ArtifactList,
    CreateExecutionBody,
    CreateWorkflowBody,
    DatabaseStats,
    Envelope,
    ErrorEnvelope,
    ExecutionCreated,
    ExecutionDetail,
    ExecutionDetailQuery,
    ExecutionList,
    Health,
    HealthStatus,
    ListArtifactsQuery,
    ListExecutionsQuery,
    LogCount,
    LogCountQuery,
    LogLines,
    LogLinesQuery,
    Message,
    Metrics,
    OptimizeResult,
    RerunBody,
)
from api_compat.state import CLOSE_STREAMS, CONFIG, ENGINE
from api_compat.surface import Surface, route

WS_DOC = {
    "description": "Switching to the WebSocket protocol (see the WebSocket section of the API document "
                   "and api_compat/README.md for the messages)",
}


def _envelope(model: type[BaseModel]) -> type[BaseModel]:
    return Envelope[model]  # type: ignore[valid-type]


def _complete_schemas(app: web.Application, schemas: dict[str, Any]) -> None:
    # `target` is `local` or a target of the engine's targets file (read when the engine started);
    # an engine without that configuration (a test double) knows `local` only
    targets = getattr(getattr(app[ENGINE], "config", None), "targets", None) or {}
    schemas["CreateExecutionBody"]["properties"]["target"]["enum"] = ["local", *sorted(targets)]


def make_surface() -> Surface:
    return Surface(
        name="monitor",
        title="StepFlow Monitor",
        envelope=_envelope,
        error_model=ErrorEnvelope,
        prefixes=("/api/executions", "/api/artifacts", "/api/health", "/api/workflows", "/ws"),
        fallback=True,
        complete_schemas=_complete_schemas,
        refusal=fail,
        errors=surface_errors(),
    )


def install(app: web.Application, surface: Surface) -> None:
    """Add the Monitor routes to `app` (their errors are `surface.errors`, run by the application's
    dispatching middleware: api_compat/error_middleware.py)."""
    r = app.router
    t_ex, t_art, t_health, t_ws = "executions", "artifacts", "health", "websocket"
    route(r, surface, "GET", "/api/executions", executions.list_executions, "List executions", t_ex,
          query=ListExecutionsQuery, response=ExecutionList, errors=(400,))
    route(r, surface, "POST", "/api/executions", executions.create_execution,
          "Create an execution (returns at once with status pending; the command runs)", t_ex,
          body=CreateExecutionBody, response=ExecutionCreated, status=201, errors=(400, 503))
    # before /api/executions/{execution_id}: aiohttp matches in order of registration
    route(r, surface, "GET", "/api/executions/statistics", statistics.statistics,
          "Ours (the reference web UI calls it): counts by status, success rate, average duration", t_ex,
          response=statistics.StatisticsOut)
    route(r, surface, "GET", "/api/executions/active", statistics.active,
          "Ours (the reference web UI calls it): pending and running executions, newest first", t_ex,
          response=ExecutionList)
    route(r, surface, "GET", "/api/executions/{execution_id}", executions.get_execution,
          "Get an execution with its steps and artifacts", t_ex, query=ExecutionDetailQuery,
          response=ExecutionDetail, errors=(404,))
    route(r, surface, "DELETE", "/api/executions/{execution_id}", executions.delete_execution,
          "Delete a finished execution with its logs and artifacts (409 while it runs: cancel it first)",
          t_ex, response=Message, errors=(404, 409))
    route(r, surface, "POST", "/api/executions/{execution_id}/cancel", executions.cancel_execution,
          "Ours: ask a running execution to stop (SIGTERM, grace, SIGKILL)", t_ex, response=Message,
          errors=(404, 409))
    route(r, surface, "POST", "/api/executions/{execution_id}/rerun", executions.rerun_execution,
          "Ours: run an execution again (from_failed: only the steps that did not complete)", t_ex,
          body=RerunBody, response=ExecutionCreated, status=201, errors=(400, 404, 409))
    route(r, surface, "GET", "/api/executions/{execution_id}/logs", executions.get_log_lines,
          "Ours: log lines of an execution, by sequence number", t_ex, query=LogLinesQuery,
          response=LogLines, errors=(400, 404))
    route(r, surface, "GET", "/api/executions/{execution_id}/logs/count", executions.count_log_lines,
          "Ours: how many log lines an execution (or some of its steps) has", t_ex, query=LogCountQuery,
          response=LogCount, errors=(400, 404))
    route(r, surface, "POST", "/api/workflows", executions.create_workflow,
          "Ours: run a workflow (a file on the server, or its YAML text)", t_ex, body=CreateWorkflowBody,
          response=ExecutionCreated, status=201, errors=(400, 503))

    route(r, surface, "GET", "/api/artifacts", artifacts.list_artifacts, "List artifacts", t_art,
          query=ListArtifactsQuery, response=ArtifactList, errors=(400,))
    route(r, surface, "POST", "/api/artifacts", artifacts.upload_artifact, "Upload an artifact", t_art,
          body=UPLOAD_SCHEMA, body_content_type="multipart/form-data", response=ArtifactDetail, status=201,
          errors=(400, 404, 413))
    route(r, surface, "GET", "/api/artifacts/{artifact_id}", artifacts.get_artifact, "Get an artifact",
          t_art, response=ArtifactDetail, errors=(404,))
    route(r, surface, "GET", "/api/artifacts/{artifact_id}/download", artifacts.download_artifact,
          "Download an artifact's file", t_art, errors=(404,), response={
              "description": "The file, with its own Content-Type (the artifact's `mime_type`) and a "
                             "Content-Disposition naming it",
              "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
          })
    route(r, surface, "DELETE", "/api/artifacts/{artifact_id}", artifacts.delete_artifact,
          "Delete an artifact", t_art, response=Message, errors=(404,))

    route(r, surface, "GET", "/api/health", health.health, "Basic health check", t_health, response=Health)
    route(r, surface, "GET", "/api/health/status", health.status, "System status", t_health,
          response=HealthStatus)
    route(r, surface, "GET", "/api/health/metrics", health.metrics, "Performance metrics", t_health,
          response=Metrics)
    route(r, surface, "GET", "/api/health/database", health.database, "Database statistics", t_health,
          response=DatabaseStats)
    route(r, surface, "POST", "/api/health/optimize", health.optimize,
          "Optimize the database (ANALYZE, WAL checkpoint, PRAGMA optimize)", t_health,
          response=OptimizeResult)

    route(r, surface, "GET", "/ws", ws.websocket_handler, "The WebSocket (also served on its own port)", t_ws,
          websocket=True, response=WS_DOC, status=101, errors=(400, 503))

    app[PROBE] = health.Probe()
    list_cache.install(app)
    _install_hub(app)
    if app[CONFIG].monitor_shape == reference_shape.REFERENCE:
        reference_shape.install(app, surface)  # every answer, errors too, rewritten as they leave


def _install_hub(app: web.Application) -> None:
    """The WebSocket hub: subscribed to the engine while the application runs; its sockets closed
    with 1001 on shutdown (on_shutdown runs before the server waits for handlers: an open WebSocket
    would hold it up) or when the listener stops."""
    config = app[CONFIG]
    hub_type = ReferenceWsHub if config.monitor_shape == reference_shape.REFERENCE else ws.WsHub
    hub = hub_type(app[ENGINE], client_queue=config.ws_client_queue, log_budget=config.ws_log_budget)
    app[WS_HUB] = hub

    async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.stop()

    async def close_sockets(app: web.Application) -> None:
        await hub.stop()

    app.cleanup_ctx.append(hub_ctx)
    app.on_shutdown.append(close_sockets)
    app[CLOSE_STREAMS].append(hub.stop)


def make_ws_app(surface: Surface, main: web.Application) -> web.Application:
    """The documented WebSocket on its own port (`ws://host:8765`): `/` and `/ws`, on the hub of
    the `main` application."""
    app = web.Application()
    app[WS_HUB] = main[WS_HUB]
    route(app.router, surface, "GET", "/", ws.websocket_handler, "The WebSocket", "websocket",
          websocket=True, response=WS_DOC, status=101, errors=(400, 503))
    route(app.router, surface, "GET", "/ws", ws.websocket_handler, "The WebSocket", "websocket",
          websocket=True, response=WS_DOC, status=101, errors=(400, 503))
    return app

"""The reference shape of the StepFlow Monitor answers (`stepflow serve --monitor-shape reference`,
`STEPFLOW_MONITOR_SHAPE=reference`): what the reference implementation's web UI reads.

The reference server answers an older shape than its own API document, and its web UI reads that
one. Under this shape the handlers still build the documented answers; the surface's errors
(`SurfaceErrors.reshape`, run by the dispatching middleware after the error answers are made)
rewrite each Monitor answer before it leaves:

- no envelope: the `data` object itself; an error is `{"error": message}` with the same status;
  `warnings`, when a request had some, sit beside the fields;
- an execution created (`POST /api/executions`, `/api/workflows`, `.../rerun`) is named by `id` (the
  documented `execution_id` stays) with its `name` and a `message`;
- `GET /api/executions/statistics` answers the counts themselves (`total_executions`, `active_now`,
  `success_rate`, `avg_duration`, ...), not under `statistics`;
- `GET /api/executions/active` lists them under `executions` and under `active_executions`;
- `GET /api/executions/{id}`: each step carries its `logs` (`timestamp`, `content`, `level`: the
  newest `STEP_LOG_LINES` lines, `logs_truncated` when there were more); output written outside any
  step (a command without step markers writes all of it there) is listed as one more step per
  branch, named after it, with `kind` "branch", before the others, when there is any; an artifact's
  `file_path` is its download address (the UI opens `file_path` to download);
- `GET /api/executions/{id}/logs`: `{"logs": [...]}`, each line also carrying its text as `message`;
- `GET /api/artifacts/execution/{execution_id}` (the UI's client calls it; the document has no such
  route): `{"artifacts", "execution_id", "count"}`.

Every other Monitor answer is its `data`. The WebSocket's messages under this shape: `reference_ws`.
`/api/openapi.json` keeps describing the documented shape.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from api_compat.monitor import artifacts
from api_compat.monitor.envelope import dumps
from api_compat.monitor.keys import STEPS_READ, SUBMITTED
from api_compat.monitor.wire import line_dict, step_dict
from api_compat.state import ENGINE
from api_compat.surface import Surface, route
from engine.model import LogLine, StepKind

REFERENCE = "reference"
#: newest log lines each step carries in an execution's detail (the UI shows them all, as text)
STEP_LOG_LINES = 1000
#: an execution with at most this many log lines has them read at once for its detail, not by step
ONE_READ_LINES = 10_000
#: artifacts `GET /api/artifacts/execution/{execution_id}` lists (the documented list's maximum)
EXECUTION_ARTIFACTS = 1000

_ENVELOPE_KEYS = frozenset({"success", "data", "error", "timestamp"})

Reshaper = Callable[[web.Request, Any], Awaitable[Any]]


# -- the answers, route by route --------------------------------------------------------------------
async def _created(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": data["execution_id"],
        **data,
        "name": request[SUBMITTED].name,
        "message": "Execution started successfully",
    }


async def _statistics(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    return dict(data["statistics"])


async def _active(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "active_executions": data["executions"], "count": len(data["executions"])}


async def _listed(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "count": len(data["executions"])}


def _artifact(artifact: dict[str, Any]) -> dict[str, Any]:
    # the UI downloads an artifact by opening its `file_path`: give it the address that serves it
    return {**artifact, "file_path": artifact["download_url"]}


def _log(line: dict[str, Any]) -> dict[str, Any]:
    return {**line, "message": line["content"]}


async def _logs_by_step(request: web.Request, execution_id: str, step_ids: list[str]) -> dict[str, list[LogLine]]:
    """The newest `STEP_LOG_LINES` + 1 lines of each step (one more: whether there were more). An
    execution of up to `ONE_READ_LINES` lines is read at once, a longer one step by step."""
    engine = request.app[ENGINE]
    found: dict[str, list[LogLine]] = {step_id: [] for step_id in step_ids}
    if await engine.count_log_lines(execution_id) <= ONE_READ_LINES:
        for line in await engine.get_log_lines(execution_id, limit=ONE_READ_LINES, newest_first=True):
            kept = found.get(line.step_id or "")
            if kept is not None and len(kept) <= STEP_LOG_LINES:
                kept.append(line)
        return found
    for step_id in step_ids:
        found[step_id] = await engine.get_log_lines(
            execution_id, step_ids=[step_id], limit=STEP_LOG_LINES + 1, newest_first=True,
        )
    return found


def _with_logs(step: dict[str, Any], newest_first: list[LogLine]) -> dict[str, Any]:
    logs = [_log(line_dict(line)) for line in reversed(newest_first[:STEP_LOG_LINES])]
    return {**step, "logs": logs, "logs_truncated": len(newest_first) > STEP_LOG_LINES}


async def _detail(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    execution_id = data["execution"]["id"]
    listed = {step["id"] for step in data["steps"]}
    # output outside every listed step (all of it, for a command without step markers) is written
    # to its branch: one entry per branch that has some, or the UI would show nothing of it
    branches = [step_dict(step) for step in request[STEPS_READ]
                if step.kind is StepKind.BRANCH and step.id not in listed]
    logs = await _logs_by_step(request, execution_id, [s["id"] for s in branches + data["steps"]])
    steps = [_with_logs(branch, logs[branch["id"]]) for branch in branches if logs[branch["id"]]]
    steps += [_with_logs(step, logs[step["id"]]) for step in data["steps"]]
    return {**data, "steps": steps, "artifacts": [_artifact(a) for a in data["artifacts"]]}


async def _logs(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"logs": [_log(line) for line in data["lines"]], "execution_id": data["execution_id"]}
    step_ids = request.query.getall("step_id", [])
    if len(step_ids) == 1:
        answer["step_id"] = step_ids[0]
    return answer


async def _artifact_list(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "artifacts": [_artifact(a) for a in data["artifacts"]]}


async def _artifact_detail(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "artifact": _artifact(data["artifact"])}


async def _execution_artifacts(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    found = [_artifact(a) for a in data["artifacts"]]
    return {"artifacts": found, "execution_id": request.match_info["execution_id"], "count": len(found)}


RESHAPERS: dict[tuple[str, str], Reshaper] = {
    ("GET", "/api/executions"): _listed,
    ("POST", "/api/executions"): _created,
    ("POST", "/api/workflows"): _created,
    ("POST", "/api/executions/{execution_id}/rerun"): _created,
    ("GET", "/api/executions/statistics"): _statistics,
    ("GET", "/api/executions/active"): _active,
    ("GET", "/api/executions/{execution_id}"): _detail,
    ("GET", "/api/executions/{execution_id}/logs"): _logs,
    ("GET", "/api/artifacts"): _artifact_list,
    ("GET", "/api/artifacts/{artifact_id}"): _artifact_detail,
    ("POST", "/api/artifacts"): _artifact_detail,
    ("GET", "/api/artifacts/execution/{execution_id}"): _execution_artifacts,
}


# -- the middleware ------------------------------------------------------------------------------------
def _envelope_of(response: web.Response) -> dict[str, Any] | None:
    """The Monitor envelope a response carries, or None (another JSON answer: not ours)."""
    body = response.body
    if not isinstance(body, (bytes, bytearray)):
        return None
    try:
        envelope = json.loads(body)
    except ValueError:
        return None
    if not isinstance(envelope, dict) or not _ENVELOPE_KEYS <= envelope.keys():
        return None
    return envelope


async def reshape(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """A Monitor answer (an error too) in the reference shape (`SurfaceErrors.reshape`)."""
    # a file, a WebSocket: not an envelope
    if not isinstance(response, web.Response) or response.prepared or response.content_type != "application/json":
        return response
    envelope = _envelope_of(response)
    if envelope is None:
        return response
    answer: Any
    if not envelope["success"]:
        answer = {"error": envelope["error"]}
    else:
        answer = envelope["data"]
        match_info = request.match_info
        resource = match_info.route.resource if match_info.http_exception is None else None
        reshaper = RESHAPERS.get((request.method, resource.canonical)) if resource is not None else None
        if reshaper is not None:
            answer = await reshaper(request, answer)
        if envelope.get("warnings") and isinstance(answer, dict):
            answer = {**answer, "warnings": envelope["warnings"]}
    response.body = dumps(answer).encode()
    return response


async def execution_artifacts(request: web.Request) -> web.StreamResponse:
    """`GET /api/artifacts/execution/{execution_id}`: the documented list, filtered to the execution."""
    query = {"execution_id": request.match_info["execution_id"], "limit": str(EXECUTION_ARTIFACTS)}
    return await artifacts.list_artifacts(request.clone(rel_url=request.rel_url.with_path("/api/artifacts")
                                                        .with_query(query)))


def install(app: web.Application, surface: Surface) -> None:
    """The reference shape's route, and its rewriting of every answer of `surface`."""
    route(app.router, surface, "GET", "/api/artifacts/execution/{execution_id}", execution_artifacts,
          "Reference shape only (its web UI's client calls it): the artifacts of an execution", "artifacts",
          errors=(400,), response={
              "description": "`{artifacts, execution_id, count}`, without the envelope (reference shape)",
              "content": {"application/json": {}},
          })
    if surface.errors is None:
        raise ValueError("the reference shape rewrites the answers of a surface with its errors")
    surface.errors = dataclasses.replace(surface.errors, reshape=reshape)

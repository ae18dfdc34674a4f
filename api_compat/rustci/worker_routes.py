"""Ours: the routes a `worker` runner's `stepflow worker --rustci-runner` processes call, under
`/api/runners/{runner_id}/worker/jobs/…`, in the executr worker's shapes (one worker program, two
ways to feed it: `api_compat.executr.client.ExecutrClient` with this prefix).

What a worker claims is one step of one of the runner's jobs (`engine.runners.worker.RemoteCommand`):
the engine runs the job's workflow, its steps in order, each on the runner's `worker` target. The
runner's registration token opens these routes (`routes.runner_credential`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from api_compat.request_parsing import read_json_body
from api_compat.rustci.activity import job_id_of
from api_compat.rustci.errors import RustciError
from api_compat.rustci.keys import DESK
from api_compat.surface import Surface, route
from engine.job_live import OutputPiece
from engine.model import Stream
from engine.runners.worker import WorkerPool

#: longest a claim is held open (seconds)
MAX_WAIT = 60.0


class WorkerClaimBody(BaseModel):
    executor_id: str = Field(min_length=1, max_length=200)
    executor_ip: str = ""


class WorkerClaimQuery(BaseModel):
    wait: float = Field(0, ge=0, le=MAX_WAIT, description="long poll: seconds to hold the request until a step comes")


class WorkerBeatBody(BaseModel):
    executor_id: str = Field(min_length=1, max_length=200)


class WorkerChunk(BaseModel):
    stream: Stream
    offset: int = Field(ge=0)
    text: str


class WorkerOutputBody(BaseModel):
    executor_id: str = Field(min_length=1, max_length=200)
    chunks: list[WorkerChunk] = Field(default_factory=list, max_length=10_000)


class WorkerReportBody(BaseModel):
    executor_id: str = Field(min_length=1, max_length=200)
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    error_message: str | None = None


def _obj(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {}}}


async def _pool(request: web.Request) -> tuple[WorkerPool, str]:
    """The engine's pool and the runner (a `worker` runner: else 409)."""
    desk = request.app[DESK]
    runner_id = request.match_info["runner_id"]
    entry = await desk.get(runner_id)
    if entry.data.get("type") != "worker":
        raise RustciError(409, f"runner {runner_id} is a {entry.data.get('type')} runner: only a worker runner's "
                               "jobs are claimed by workers", "CONFLICT", {"runner_id": runner_id})
    pool = getattr(desk.engine, "workers", None)
    if pool is None:
        raise RustciError(503, "this server's engine takes no workers", "SERVICE_UNAVAILABLE")
    return pool, runner_id


async def _body(request: web.Request, model: type[Any]) -> Any:
    from api_compat.rustci.handlers import validate

    return validate(model, await read_json_body(request, error=RustciError))


async def claim(request: web.Request) -> web.Response:
    pool, runner_id = await _pool(request)
    body = await _body(request, WorkerClaimBody)
    try:
        wait = min(max(float(request.query.get("wait", "0") or 0), 0.0), MAX_WAIT)
    except ValueError:
        raise RustciError(400, "wait must be a number of seconds", "INVALID_REQUEST") from None
    command = await pool.claim(runner_id, body.executor_id, wait)
    if command is None:
        return web.Response(status=204)
    if request.transport is None or request.transport.is_closing():  # its worker left meanwhile
        pool.unclaim(command)
        return web.Response(status=204)
    answer = command.description()
    execution_id = command.spec.execution_id
    answer["job_id"] = job_id_of(execution_id) if execution_id else None
    answer["runner_id"] = runner_id
    answer["type"] = "step"
    request.app[DESK].activity.log(runner_id, "info", f"Step claimed by worker {body.executor_id}",
                                   {"job_id": answer["job_id"], "worker": body.executor_id})
    return web.json_response(answer)


async def heartbeat(request: web.Request) -> web.Response:
    pool, runner_id = await _pool(request)
    body = await _body(request, WorkerBeatBody)
    pool.heartbeat(runner_id, request.match_info["command_id"], body.executor_id)
    return web.Response(status=204)


async def output(request: web.Request) -> web.Response:
    pool, runner_id = await _pool(request)
    body = await _body(request, WorkerOutputBody)
    command = pool.command(runner_id, request.match_info["command_id"])
    await command.take(body.executor_id, [OutputPiece(c.stream, c.offset, c.text) for c in body.chunks])
    pool.beat(runner_id, body.executor_id)
    return web.Response(status=204)


async def _report(request: web.Request) -> web.Response:
    pool, runner_id = await _pool(request)
    body = await _body(request, WorkerReportBody)
    command = pool.command(runner_id, request.match_info["command_id"])
    stderr = body.stderr
    if body.error_message and body.exit_code != 0 and body.error_message.startswith("worker"):
        stderr += f"\n[stepflow worker: {body.error_message}]\n"
    await command.finish(body.executor_id, body.exit_code, body.stdout, stderr)
    pool.beat(runner_id, body.executor_id)
    return web.Response(status=204)


def install(app: web.Application, surface: Surface) -> None:
    r, tag = app.router, "rustci workers"
    base = "/api/runners/{runner_id}/worker/jobs"
    one = f"{base}/{{command_id}}"
    route(r, surface, "POST", f"{base}/claim", claim, "A worker runner's worker claims its next step (ours)", tag,
          body=WorkerClaimBody, query=WorkerClaimQuery, response=_obj("the step: id, script, shell, env, job_id"),
          errors=(400, 404, 409), other_responses={204: {"description": "no step waits (after `wait` seconds)"}})
    route(r, surface, "PUT", f"{one}/heartbeat", heartbeat, "The step still runs on its worker (ours)", tag,
          body=WorkerBeatBody, response={"description": "noted"}, status=204, errors=(400, 404, 409))
    route(r, surface, "POST", f"{one}/output", output, "Output of a running step, with offsets (ours)", tag,
          body=WorkerOutputBody, response={"description": "taken"}, status=204, errors=(400, 404, 409))
    for action in ("complete", "fail"):
        route(r, surface, "PUT", f"{one}/{action}", _report, f"The step ended on its worker: {action} (ours)", tag,
              body=WorkerReportBody, response={"description": "taken"}, status=204, errors=(400, 404, 409),
              operation_id=f"rustci_worker_{action}")

"""The job routes: create, list (the document's pagination), get, its executions, execute."""

from __future__ import annotations

from datetime import UTC
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api_compat.opsconductor import serials
from api_compat.opsconductor.errors import OpsError
from api_compat.opsconductor.keys import FILE_TARGETS, SCHEDULER
from api_compat.opsconductor.launch import resolve_targets, start_execution
from api_compat.opsconductor.paging import page_of, pagination
from api_compat.opsconductor.targets import store_of
from api_compat.opsconductor.wire import ExecuteBody, JobCreate, execution_json, job_json
from api_compat.query_params import QueryParams
from api_compat.request_parsing import read_json_body
from api_compat.state import ENGINE
from engine.store.opsconductor import OpsJob

SORTS = ("created_at", "id", "name", "scheduled_at", "job_serial")


class ListJobsQuery(BaseModel):
    page: int = Field(1, ge=1, le=1_000_000)
    per_page: int = Field(20, ge=1, le=100)
    #: an empty value is none (the default), as a form's empty field
    sort: Literal["created_at", "id", "name", "scheduled_at", "job_serial", ""] = "created_at"
    order: Literal["asc", "desc", ""] = "desc"


class ExecutionsQuery(BaseModel):
    limit: int = Field(100, ge=1, le=1000)


async def find_job(request: web.Request, raw: str) -> OpsJob:
    """A job by its id or its serial; 404 when there is none."""
    store = store_of(request)
    if raw.isdigit() and len(raw) < 19:
        job = await store.get_ops_job(id=int(raw))
    else:
        job = await store.get_ops_job(serial=serials.JOB.check(raw, field="job_id"))
    if job is None:
        raise OpsError(404, f"no job {raw}")
    return job


async def create_job(request: web.Request) -> web.Response:
    body = JobCreate.model_validate(await read_json_body(request, error=OpsError))
    store = store_of(request)
    await resolve_targets(store, body.target_ids)
    if body.scheduled_at is not None and not body.target_ids:
        raise OpsError(422, "a scheduled job needs target_ids to run on", {"field": "target_ids"})
    job = await store.create_ops_job(
        name=body.name, description=body.description, job_type=body.job_type,
        actions=[a.model_dump(mode="json") for a in body.actions], target_ids=body.target_ids,
        scheduled_at=body.scheduled_at.astimezone(UTC) if body.scheduled_at else None)
    if job.scheduled_at is not None:
        request.app[SCHEDULER].wake()
    return web.json_response(job_json(job), status=201)


async def list_jobs(request: web.Request) -> web.Response:
    page, per_page = page_of(request)
    q = QueryParams(request.query, error=OpsError)
    sort = q.choice("sort", SORTS) or "created_at"
    order = q.choice("order", ("asc", "desc")) or "desc"
    jobs, total = await store_of(request).list_ops_jobs(sort=sort, descending=order == "desc", limit=per_page,
                                                        offset=(page - 1) * per_page)
    return web.json_response({"data": [job_json(j) for j in jobs], "pagination": pagination(page, per_page, total)})


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(job_json(await find_job(request, request.match_info["job_id"])))


async def job_executions(request: web.Request) -> web.Response:
    job = await find_job(request, request.match_info["job_id"])
    q = QueryParams(request.query, error=OpsError)
    limit = q.integer("limit", 100, minimum=1, maximum=1000)  # ExecutionsQuery
    executions = await store_of(request).ops_job_executions(job.id, limit=limit)
    return web.json_response([execution_json(e) for e in executions])


async def execute_job(request: web.Request) -> web.Response:
    job = await find_job(request, request.match_info["job_id"])
    body = ExecuteBody.model_validate(await read_json_body(request, empty={}, error=OpsError))
    target_ids = body.target_ids if body.target_ids is not None else job.target_ids
    if not target_ids:
        raise OpsError(422, "no targets: give target_ids (the job has none of its own)", {"field": "target_ids"})
    file_targets = request.app[FILE_TARGETS]  # read first: as an argument, mypy infers the key's type
    execution = await start_execution(request.app[ENGINE], store_of(request), file_targets, job,
                                      [int(i) for i in target_ids])
    return web.json_response(execution_json(execution), status=201)

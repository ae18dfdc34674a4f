"""The executr API's routes under /api/v1 (specs/executr-api.md), `make_surface()` and
`install(app, surface)` for `api_compat.app`, and the task that returns silent jobs to the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api_compat.executr import admin, jobs
from api_compat.executr.errors import ErrorBody, fail, surface_errors
from api_compat.executr.jobs import MAX_CLAIM_WAIT
from api_compat.executr.keys import HEARTBEAT_TIMEOUT, METRICS, STOPPING
from api_compat.executr.metrics import JobMetrics
from api_compat.executr.wire import (
    BulkCancelled,
    BulkCancelRequest,
    BulkSubmitted,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    Job,
    JobStatus,
    JobSubmission,
    OutputRequest,
    Priority,
    Submitted,
)
from api_compat.state import CLOSE_STREAMS, CONFIG, ENGINE
from api_compat.surface import Surface, route

log = logging.getLogger(__name__)
PREFIX = "/api/v1"


class ListJobsQuery(BaseModel):
    #: an empty value is no filter (as the reference reads it)
    status: JobStatus | Literal[""] | None = None
    type: str | None = None
    priority: Priority | Literal[""] | None = None
    #: ours: only the jobs this executor holds or held last
    executor_id: str | None = None
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=2**62)


class ClaimQuery(BaseModel):
    #: ours: wait up to this many seconds for a job before answering 204
    wait: float = Field(0, ge=0, le=MAX_CLAIM_WAIT)


_JOB_ID = {"job_id": {"type": "string", "format": "uuid"}}
_NO_JOB = {204: {"description": "No job is queued (after `wait` seconds, when given)"}}


def _array(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"type": "array", "items": model.model_json_schema()}}}}


def make_surface() -> Surface:
    return Surface(name="executr", title="executr job queue", error_model=ErrorBody, prefixes=(PREFIX,),
                   refusal=fail, errors=surface_errors())


def install(app: web.Application, surface: Surface) -> None:
    r = app.router
    t_jobs, t_exec, t_admin = "executr jobs", "executr executors", "executr admin"
    p = PREFIX
    route(r, surface, "GET", f"{p}/health", admin.health, "Server health, the database checked", t_admin,
          response={"description": "healthy (503: the database cannot be read)",
                    "content": {"application/json": {}}}, errors=(503,))
    route(r, surface, "GET", f"{p}/metrics", admin.metrics, "Prometheus metrics (text format)", t_admin,
          response={"description": "Prometheus text exposition", "content": {"text/plain": {}}})
    route(r, surface, "POST", f"{p}/jobs/claim", jobs.claim_job,
          "Executor: claim the oldest job of the highest priority (204: none; ours: ?wait=SECONDS long-polls)",
          t_exec, query=ClaimQuery, body=ClaimRequest, response=Job, errors=(400,), other_responses=_NO_JOB)
    route(r, surface, "POST", f"{p}/jobs/bulk", jobs.bulk_submit,
          "Submit up to 100 jobs (201 all, 206 some, 400 none; per-item results)", t_jobs,
          # each item is validated on its own (a refused one is reported in `results`): any object here
          body={"type": "array", "items": {"type": "object", "description": "a job, as POST /api/v1/jobs takes it"},
                "minItems": 1, "maxItems": 100},
          response=BulkSubmitted, status=201, errors=(400,),
          other_responses={206: {"description": "Some jobs were submitted, some refused (see `results`)",
                                 "content": {"application/json": {"schema": BulkSubmitted.model_json_schema()}}}})
    route(r, surface, "POST", f"{p}/jobs/bulk/cancel", jobs.bulk_cancel, "Cancel pending jobs, per-id results",
          t_jobs, body=BulkCancelRequest, response=BulkCancelled, errors=(400,))
    route(r, surface, "POST", f"{p}/jobs", jobs.submit_job, "Submit a job", t_jobs, body=JobSubmission,
          response=Submitted, status=201, errors=(400, 503))
    route(r, surface, "GET", f"{p}/jobs", jobs.list_jobs, "List jobs (any subset of the filters)", t_jobs,
          query=ListJobsQuery, response=_array(Job, "Jobs, newest first"), errors=(400,))
    route(r, surface, "GET", f"{p}/jobs/{{job_id}}", jobs.get_job, "A job with its output and attempts", t_jobs,
          response=Job, errors=(400, 404), path_params=_JOB_ID)
    route(r, surface, "DELETE", f"{p}/jobs/{{job_id}}", jobs.cancel_job,
          "Cancel a pending job (400: it runs or ended)", t_jobs, status=204, errors=(400, 404),
          path_params=_JOB_ID)
    route(r, surface, "PUT", f"{p}/jobs/{{job_id}}/heartbeat", jobs.heartbeat,
          "Executor: the job still runs (409: another executor holds it)", t_exec, body=HeartbeatRequest,
          status=204, errors=(400, 404, 409), path_params=_JOB_ID)
    route(r, surface, "POST", f"{p}/jobs/{{job_id}}/output", jobs.job_output,
          "Executor (stepflow's extension): output of a running job as it is printed", t_exec,
          description="The worker holding the job sends its output in batches while it runs; the lines show "
                      "at once and the markers in them become steps. Each chunk gives the byte offset where "
                      "its text starts in its stream (UTF-8): a chunk sent again is taken once, and the "
                      "report at complete/fail replays only what was not streamed. 400 when a chunk starts "
                      "past what was received (one was lost: send from there, or stop streaming). Servers "
                      "without this route (the reference) answer 404: a worker then sends everything at the end.",
          body=OutputRequest, status=204, errors=(400, 404, 409), path_params=_JOB_ID)
    route(r, surface, "PUT", f"{p}/jobs/{{job_id}}/complete", jobs.complete_job,
          "Executor: the job completed (output kept up to 1 MiB per stream)", t_exec, body=CompleteRequest,
          status=204, errors=(400, 404, 409), path_params=_JOB_ID)
    route(r, surface, "PUT", f"{p}/jobs/{{job_id}}/fail", jobs.fail_job, "Executor: the job failed", t_exec,
          body=FailRequest, status=204, errors=(400, 404, 409), path_params=_JOB_ID)
    route(r, surface, "GET", f"{p}/admin/stats", admin.stats, "Jobs by status, pending by priority, executors",
          t_admin, response={"description": "Statistics", "content": {"application/json": {}}})
    route(r, surface, "GET", f"{p}/admin/executors", admin.executors, "Executors running a job now", t_admin,
          response={"description": "Executors ([] when none)", "content": {"application/json": {}}})
    app[METRICS] = JobMetrics()
    stopping = app[STOPPING] = asyncio.Event()

    async def release_claims(app: web.Application | None = None) -> None:
        stopping.set()

    app[CLOSE_STREAMS].append(release_claims)
    app.on_shutdown.append(release_claims)
    app[HEARTBEAT_TIMEOUT] = app[CONFIG].executr_heartbeat_timeout
    app.cleanup_ctx.append(_stale_jobs)


async def _stale_jobs(app: web.Application) -> AsyncIterator[None]:
    """Every few seconds, jobs whose executor went silent go back to the queue (or fail)."""
    job_desk = getattr(app[ENGINE], "jobs", None)
    if job_desk is None:  # an engine without jobs (a test double)
        yield
        return
    timeout = app[HEARTBEAT_TIMEOUT]
    metrics = app[METRICS]

    async def loop() -> None:
        while True:
            await asyncio.sleep(min(max(timeout / 3, 0.05), 5.0))
            try:
                metrics.stale_recovered.inc(len(await job_desk.requeue_stale(timeout)))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("returning silent jobs to the queue failed")

    task = asyncio.create_task(loop(), name="executr-stale-jobs")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

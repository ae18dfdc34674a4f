"""The job routes: submit (one or a bulk of them), list, get, cancel (one or a bulk), and the
executor's claim (with our long-poll `?wait=`), heartbeat, complete and fail."""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from api_compat.executr.errors import ExecutrError, refuse_body
from api_compat.executr.keys import METRICS, STOPPING
from api_compat.executr.wire import (
    MAX_BULK,
    PRIORITY_LEVEL,
    BulkCancelRequest,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    JobStatus,
    JobSubmission,
    OutputRequest,
    Priority,
    job_json,
    parse_job_id,
    priority_of,
    rfc3339,
)
from api_compat.query_params import QueryParams
from api_compat.request_parsing import read_json_body, validate_object
from api_compat.state import CONFIG, ENGINE
from engine.errors import EngineError
from engine.job_live import OutputPiece
from engine.jobs import JobReport, Jobs, job_fields
from engine.model import ExecutionKind, Stream
from engine.store import QueueItem, QueueStatus
from engine.submission import SubmitRequest

M = TypeVar("M", bound=BaseModel)
#: the longest a claim may wait for a job (`?wait=`), in seconds
MAX_CLAIM_WAIT = 25.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _jobs(request: web.Request) -> Jobs:
    return request.app[ENGINE].jobs


def validate(model: type[M], value: Any) -> M:
    return validate_object(model, value, refuse_body)


async def _body(request: web.Request, model: type[M]) -> M:
    return validate(model, await read_json_body(request, error=ExecutrError))


async def _report(request: web.Request, model: type[M]) -> M:
    """A worker's report: its output may be larger than other bodies (each stream is kept up to
    1 MiB; what is beyond is cut here, not refused), up to the listener's upload cap."""
    larger = request.clone(client_max_size=max(request.app[CONFIG].max_upload_bytes, request.client_max_size))
    return validate(model, await read_json_body(larger, error=ExecutrError))


def _job_id(request: web.Request) -> str:
    raw = request.match_info["job_id"]
    job_id = parse_job_id(raw)
    if job_id is None:
        raise ExecutrError(400, "invalid job id: a job id is a UUID", {"id": raw[:100]})
    return job_id


async def _submit_one(request: web.Request, sub: JobSubmission) -> dict[str, Any]:
    payload = sub.model_dump(mode="json", exclude={"max_retries"})
    execution = await request.app[ENGINE].submit(SubmitRequest(
        kind=ExecutionKind.JOB, source="executr", name=sub.type, payload=payload, env=sub.env_variables,
        priority=PRIORITY_LEVEL[sub.priority], max_attempts=sub.max_retries + 1,
    ))
    request.app[METRICS].submitted.labels(sub.type, sub.priority.value).inc()
    return {"id": execution.id, "type": sub.type, "status": JobStatus.PENDING.value,
            "priority": sub.priority.value, "created_at": rfc3339(execution.created_at)}


async def submit_job(request: web.Request) -> web.Response:
    sub = await _body(request, JobSubmission)
    return _json(await _submit_one(request, sub), 201)


async def bulk_submit(request: web.Request) -> web.Response:
    body = await read_json_body(request, error=ExecutrError)
    if not isinstance(body, list):
        raise ExecutrError(400, "the request body must be a JSON array of jobs")
    if not body:
        raise ExecutrError(400, "no jobs given")
    if len(body) > MAX_BULK:
        raise ExecutrError(400, f"too many jobs: at most {MAX_BULK} per request", {"given": len(body)})

    async def one(index: int, value: Any) -> dict[str, Any]:
        try:
            created = await _submit_one(request, validate(JobSubmission, value))
        except (ExecutrError, EngineError) as exc:
            return {"index": index, "success": False, "error": exc.message}
        return {"index": index, "success": True, "job_id": created["id"]}

    # side by side: their executions go to the store in one of its writer's transactions (each
    # waits for its own to be stored before it is queued), queued in the order given
    results = await asyncio.gather(*(one(index, value) for index, value in enumerate(body)))
    ok = sum(1 for r in results if r["success"])
    answer = {"total": len(results), "successful": ok, "failed": len(results) - ok, "results": results}
    if not ok:
        raise ExecutrError(400, "no job was submitted: every one was refused", answer)
    return _json(answer, 201 if ok == len(results) else 206)


async def list_jobs(request: web.Request) -> web.Response:
    q = QueryParams(request.query, error=ExecutrError)
    status = q.choice("status", JobStatus)
    priority = q.choice("priority", Priority)
    items, _total = await _jobs(request).list_jobs(
        status=QueueStatus(status.value) if status is not None else None,
        job_type=q.text("type"),
        priority=PRIORITY_LEVEL[priority] if priority is not None else None,
        worker=q.text("executor_id"),
        limit=q.integer("limit", 100, minimum=1, maximum=1000),
        offset=q.integer("offset", 0, minimum=0),
    )
    return _json([job_json(item, full=False) for item in items])


#: the fixed paths below /jobs that the route of a job id also matches, and the methods they take
_FIXED = {"claim": "POST", "bulk": "POST"}


def _not_fixed(request: web.Request) -> None:
    """`GET /jobs/claim`, `DELETE /jobs/bulk`: a method the fixed path does not take (405), not a
    malformed job id (400) as the route of a job id (`/jobs/{job_id}`) would have it."""
    allowed = _FIXED.get(request.match_info["job_id"])
    if allowed is not None:
        raise web.HTTPMethodNotAllowed(request.method, {allowed})


async def get_job(request: web.Request) -> web.Response:
    _not_fixed(request)
    job_id = _job_id(request)
    found = await _jobs(request).get(job_id)
    if found is None:
        raise ExecutrError(404, "job not found", {"job_id": job_id})
    return _json(job_json(*found))


async def cancel_job(request: web.Request) -> web.Response:
    _not_fixed(request)
    job_id = _job_id(request)
    await _jobs(request).cancel(job_id)
    request.app[METRICS].cancelled.inc()
    return web.Response(status=204)


async def bulk_cancel(request: web.Request) -> web.Response:
    body = await _body(request, BulkCancelRequest)
    jobs = _jobs(request)
    results: list[dict[str, Any]] = []
    for raw in body.job_ids:
        job_id = parse_job_id(raw)
        if job_id is None:
            results.append({"job_id": raw[:100], "cancelled": False, "error": "invalid job id"})
            continue
        try:
            await jobs.cancel(job_id)
        except EngineError as exc:
            results.append({"job_id": job_id, "cancelled": False, "error": exc.message})
        else:
            request.app[METRICS].cancelled.inc()
            results.append({"job_id": job_id, "cancelled": True})
    cancelled = sum(1 for r in results if r["cancelled"])
    return _json({"cancelled": cancelled, "failed": len(results) - cancelled, "total": len(results),
                  "errors": [f"{r['job_id']}: {r['error']}" for r in results if not r["cancelled"]],
                  "results": results})


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def claim_job(request: web.Request) -> web.StreamResponse:
    q = QueryParams(request.query, error=ExecutrError)
    wait = min(_seconds(q, request.query.get("wait"), "wait"), request.app[CONFIG].executr_longest_claim_wait)
    body = await _body(request, ClaimRequest)
    jobs = _jobs(request)
    metrics = request.app[METRICS]
    deadline = time.monotonic() + wait
    while True:
        started = time.monotonic()
        signal = jobs.work_signal()  # before the claim: a job queued while it runs still wakes us
        claimed = await jobs.claim(body.executor_id, body.executor_ip or request.remote or "")
        metrics.claim_latency.observe(time.monotonic() - started)
        if claimed is not None:
            break
        left = deadline - time.monotonic()
        stopping = request.app[STOPPING]
        if left <= 0 or stopping.is_set():
            return web.Response(status=204)
        waits = {asyncio.ensure_future(jobs.wait_for_work(left, signal)), asyncio.ensure_future(stopping.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if _client_gone(request):
            # a worker that stopped while its claim waited: a job claimed now would go to nobody
            # and sit running until the heartbeat timeout put it back
            return web.Response(status=204)
    item = claimed.item
    metrics.claimed.labels(body.executor_id).inc()
    if item.claimed_at is not None:
        job_type = str(job_fields(item).get("type", ""))
        metrics.wait_time.labels(job_type, priority_of(item.priority).value).observe(
            max((item.claimed_at - item.created_at).total_seconds(), 0.0))
    return _json(job_json(item, claimed.execution))


def _seconds(q: QueryParams, raw: str | None, name: str) -> float:
    """`raw` (the parameter `name`, None when not given) as seconds; empty is no number: refused, as
    QueryParams.integer refuses it."""
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise q.refuse(name, f"a number of seconds from 0 to {MAX_CLAIM_WAIT:g}") from None
    if not 0 <= value <= MAX_CLAIM_WAIT:
        raise q.refuse(name, f"a number of seconds from 0 to {MAX_CLAIM_WAIT:g}")
    return value


async def heartbeat(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    body = await _body(request, HeartbeatRequest)
    await _jobs(request).heartbeat(job_id, body.executor_id)
    request.app[METRICS].heartbeats.labels(body.executor_id).inc()
    return web.Response(status=204)


async def job_output(request: web.Request) -> web.Response:
    """stepflow's extension: the worker holding a running job sends its output as it comes."""
    job_id = _job_id(request)
    body = await _report(request, OutputRequest)
    pieces = [OutputPiece(Stream(c.stream.value), c.offset, c.text) for c in body.chunks]
    await _jobs(request).stream_output(job_id, body.executor_id, pieces)
    return web.Response(status=204)


async def complete_job(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    body = await _report(request, CompleteRequest)
    item = await _jobs(request).finish(job_id, body.executor_id, QueueStatus.COMPLETED,
                                       JobReport(body.stdout, body.stderr, body.exit_code))
    _count_end(request, item, body.executor_id)
    return web.Response(status=204)


async def fail_job(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    body = await _report(request, FailRequest)
    item = await _jobs(request).finish(job_id, body.executor_id, QueueStatus.FAILED,
                                       JobReport(body.stdout, body.stderr, body.exit_code,
                                                 body.error_message or None))
    _count_end(request, item, body.executor_id)
    return web.Response(status=204)


def _count_end(request: web.Request, item: QueueItem, executor: str) -> None:
    metrics = request.app[METRICS]
    fields = item.payload if isinstance(item.payload, dict) else {}
    job_type, priority = str(fields.get("type", "")), priority_of(item.priority).value
    counter = metrics.completed if item.status is QueueStatus.COMPLETED else metrics.failed
    counter.labels(job_type, priority, executor).inc()
    if item.claimed_at is not None and item.finished_at is not None:
        metrics.duration.labels(job_type, priority, item.status.value).observe(
            max((item.finished_at - item.claimed_at).total_seconds(), 0.0))

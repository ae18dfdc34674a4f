"""Executions: list, detail, create (returns at once, `pending`), delete; and ours: cancel, rerun,
log lines, workflows."""

from __future__ import annotations

from aiohttp import web

from api_compat.monitor.envelope import ApiError, dumps, found, ok, ok_json, page
from api_compat.monitor.errors import read_json, read_query
from api_compat.monitor.keys import LIST_CACHE, STEPS_READ, SUBMITTED
from api_compat.monitor.schemas import (
    CreateExecutionBody,
    CreateWorkflowBody,
    ExecutionDetailQuery,
    ListExecutionsQuery,
    LogCountQuery,
    LogLinesQuery,
    RerunBody,
)
from api_compat.monitor.wire import artifact_dict, execution_dict, iso, line_dict, step_dict
from api_compat.monitor.workflow_folders import allowed_workflow_file
from api_compat.state import CONFIG, ENGINE
from engine.model import ArtifactFilter, Execution, ExecutionFilter, ExecutionKind, StepKind
from engine.submission import SubmitRequest

#: the surface executions submitted here come from
SOURCE = "monitor"


def created(request: web.Request, execution: Execution, warnings: list[str]) -> web.Response:
    request[SUBMITTED] = execution
    return ok(
        {"execution_id": execution.id, "status": execution.status.value, "created_at": iso(execution.created_at)},
        status=201, warnings=warnings,
    )


async def _existing(request: web.Request) -> Execution:
    execution_id = request.match_info["execution_id"]
    return found(await request.app[ENGINE].get_execution(execution_id), "execution", execution_id)


async def list_executions(request: web.Request) -> web.Response:
    # the same query string on an unchanged database: the same answer (see list_cache)
    cache = request.app[LIST_CACHE]
    key = request.query_string
    cached, version = await cache.lookup(key)
    if cached is not None:
        return ok_json(cached)
    q = read_query(request, ListExecutionsQuery)
    flt = ExecutionFilter(status=q.status, user=q.user, text=q.text, limit=q.limit, offset=q.offset)
    executions, total = await request.app[ENGINE].list_executions(flt)
    data = dumps(page("executions", [execution_dict(e) for e in executions], total, q.offset))
    cache.keep(key, version, data, executions)
    return ok_json(data)


async def get_execution(request: web.Request) -> web.Response:
    q = read_query(request, ExecutionDetailQuery)
    engine = request.app[ENGINE]
    execution = await _existing(request)
    steps = request[STEPS_READ] = await engine.get_steps(execution.id)
    if not q.branches:
        # the API's steps are the workflow and marker steps, indexed from 0 (what total_steps and
        # current_step_index count); a step's `target` tells the branches apart
        steps = [s for s in steps if s.kind is not StepKind.BRANCH]
    artifacts, _total = await engine.list_artifacts(ArtifactFilter(execution_id=execution.id, limit=1000))
    return ok({
        "execution": execution_dict(execution),
        "steps": [step_dict(s) for s in steps],
        "artifacts": [artifact_dict(a) for a in artifacts],
    })


async def create_execution(request: web.Request) -> web.Response:
    body, warnings = await read_json(request, CreateExecutionBody)
    execution = await request.app[ENGINE].submit(SubmitRequest(
        kind=ExecutionKind.COMMAND, source=SOURCE, command=body.command, name=body.name,
        cwd=body.working_directory, env=body.environment, targets=[body.target], tags=body.tags,
        metadata=body.metadata, user=body.user, markers=body.markers, timeout=body.timeout,
    ))
    return created(request, execution, warnings)


async def delete_execution(request: web.Request) -> web.Response:
    execution_id = request.match_info["execution_id"]
    # as the document has it, a running execution is deleted too: cancelled first, its processes
    # waited for (bounded by its kill grace), then deleted; the message says which happened
    cancelled = await request.app[ENGINE].cancel_and_delete(execution_id)
    message = "Execution cancelled and deleted" if cancelled else "Execution deleted successfully"
    return ok({"message": message, "execution_id": execution_id})


async def cancel_execution(request: web.Request) -> web.Response:
    execution_id = request.match_info["execution_id"]
    await request.app[ENGINE].cancel(execution_id)
    return ok({"message": "Cancellation requested", "execution_id": execution_id})


async def rerun_execution(request: web.Request) -> web.Response:
    body, warnings = await read_json(request, RerunBody, optional=True)
    execution = await request.app[ENGINE].rerun(request.match_info["execution_id"], from_failed=body.from_failed)
    return created(request, execution, warnings)


async def get_log_lines(request: web.Request) -> web.Response:
    q = read_query(request, LogLinesQuery)
    execution = await _existing(request)
    # offset only when asked: a client written before it existed need not know it
    skip = {"offset": q.offset} if q.offset else {}
    lines = await request.app[ENGINE].get_log_lines(
        execution.id, step_ids=q.step_id, after_seq=q.after_seq, before_seq=q.before_seq,
        limit=q.limit, newest_first=q.newest_first, **skip,
    )
    # ours: each line's step name beside its step id (lines of parallel steps interleave)
    names = {step.id: step.name for step in await request.app[ENGINE].get_steps(execution.id)} if lines else {}
    return ok({"execution_id": execution.id, "lines": [
        {**line_dict(line), "step_name": names.get(line.step_id or "")} for line in lines
    ]})


async def count_log_lines(request: web.Request) -> web.Response:
    q = read_query(request, LogCountQuery)
    execution = await _existing(request)
    count = await request.app[ENGINE].count_log_lines(execution.id, step_ids=q.step_id)
    return ok({"execution_id": execution.id, "count": count})


async def create_workflow(request: web.Request) -> web.Response:
    body, warnings = await read_json(request, CreateWorkflowBody)
    if (body.path is None) == (body.text is None):
        raise ApiError(400, "give exactly one of 'path' (a file on the server) or 'text' (the workflow itself)")
    engine = request.app[ENGINE]
    path = body.path
    if path is not None:
        path = str(allowed_workflow_file(path, request.app[CONFIG].workflow_dirs, engine.data_dir))
    # the engine reads it in a thread with a time bound (engine.workflow.load.read_workflow)
    execution = await engine.submit(SubmitRequest(
        kind=ExecutionKind.WORKFLOW, source=SOURCE, workflow_path=path, workflow_text=body.text,
        targets=body.targets or (), name=body.name, user=body.user,
    ))
    return created(request, execution, warnings)

"""Lookups by serial: an execution (with its job and branches), a branch (with its output, error,
exit code and target), search over serials, job names and target names, and the bulk lookup.

A branch's `result_output` is its standard output (the last `OUTPUT_LINES` lines of every step on
its target), `result_error` its standard error, or when it wrote none the engine's reason for a
failure ("exit code 2"); null when there is neither."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from api_compat.opsconductor import serials
from api_compat.opsconductor.errors import OpsError
from api_compat.opsconductor.targets import store_of
from api_compat.opsconductor.wire import BulkLookup, branch_json, execution_json, target_ref
from api_compat.query_params import QueryParams
from api_compat.request_parsing import read_json_body
from api_compat.state import ENGINE
from engine.model import Stream
from engine.store.opsconductor import TARGET_KIND, OpsBranch, OpsExecution

#: lines of a branch's output its answer carries, at most (the whole log: the Monitor API's logs route)
OUTPUT_LINES = 2000
SEARCH_TYPES = ("all", "execution", "branch")


class SearchQuery(BaseModel):
    q: str = Field("", description="Text in a serial, a job's name or a target's name (empty: the newest)")
    type: Literal["all", "execution", "branch", ""] = "all"
    limit: int = Field(50, ge=1, le=500)


async def execution_by_serial(request: web.Request) -> web.Response:
    serial = serials.EXECUTION.check(request.match_info["execution_serial"])
    store = store_of(request)
    execution = await store.get_ops_execution(serial=serial)
    if execution is None:
        raise OpsError(404, f"no execution {serial}")
    job = await store.get_ops_job(id=execution.job_id)
    answer = execution_json(execution)
    answer["job"] = {"id": execution.job_id, "job_serial": serials.job_of(serial),
                     "name": job.name if job is not None else None}
    return web.json_response(answer)


async def branch_by_serial(request: web.Request) -> web.Response:
    serial = serials.BRANCH.check(request.match_info["branch_serial"])
    store = store_of(request)
    branch = await store.get_ops_branch(serial)
    if branch is None:
        raise OpsError(404, f"no branch {serial}")
    execution = await store.get_ops_execution(id=branch.ops_execution_id)
    answer = branch_json(branch)
    output, error = await _results(request, branch, execution)
    answer["result_output"] = output
    answer["result_error"] = error
    answer["target"] = target_ref(await store.get_registered(TARGET_KIND, id=branch.target_id), branch)
    return web.json_response(answer)


async def _results(request: web.Request, branch: OpsBranch,
                   execution: OpsExecution | None) -> tuple[str | None, str | None]:
    if execution is None or execution.execution_id is None:
        return None, branch.error
    engine = request.app[ENGINE]
    steps = [s.id for s in await engine.get_steps(execution.execution_id) if s.target == branch.target_name]
    lines = await engine.get_log_lines(execution.execution_id, step_ids=steps, limit=OUTPUT_LINES, newest_first=True)
    lines.reverse()
    out = "\n".join(line.text for line in lines if line.stream is Stream.STDOUT)
    err = "\n".join(line.text for line in lines if line.stream is Stream.STDERR)
    return out, err or branch.error or None


async def search(request: web.Request) -> web.Response:
    q = QueryParams(request.query, error=OpsError)
    text = (q.text("q") or "").strip()
    kind = q.choice("type", SEARCH_TYPES) or "all"
    limit = q.integer("limit", 50, minimum=1, maximum=500)
    hits = await store_of(request).search_ops(text, executions=kind in ("all", "execution"),
                                              branches=kind in ("all", "branch"), limit=limit)
    results: list[dict[str, Any]] = []
    for hit in hits:
        if hit.branch is None:
            entry = {"type": "execution", "serial": hit.execution.serial, **execution_json(hit.execution)}
        else:
            entry = {"type": "branch", "serial": hit.branch.serial, "job_serial": hit.job_serial,
                     **branch_json(hit.branch)}
        entry["job_name"] = hit.job_name
        results.append(entry)
    return web.json_response({"query": text, "type": kind, "limit": limit, "total": len(results),
                              "results": results})


async def bulk(request: web.Request) -> web.Response:
    body = BulkLookup.model_validate(await read_json_body(request, error=OpsError))
    found = await store_of(request).find_ops_serials(body.serials)
    results: list[dict[str, Any]] = []
    not_found: list[str] = []
    for serial in body.serials:
        item = found.get(serial)
        if item is None:
            not_found.append(serial)
            results.append({"serial": serial, "found": False})
        elif isinstance(item, OpsBranch):
            results.append({"serial": serial, "found": True, "type": "branch", "data": branch_json(item)})
        else:
            results.append({"serial": serial, "found": True, "type": "execution",
                            "data": execution_json(item, branches=False)})
    return web.json_response({"results": results, "not_found": not_found})

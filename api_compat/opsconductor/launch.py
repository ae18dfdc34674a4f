"""A job's execution: serials first (the execution's and one per target, in one transaction), then an
ordinary workflow execution submitted to the engine (one branch per target, each action a step,
needing the one before, so they run in order; markers in the output become sub-steps), then the
link between them. The serials are labels of the execution (`opsconductor.execution`, ...), so what
reads the engine's events (the WebSocket) knows them at once.

A submission the engine refuses leaves its execution failed, with why: a serial is never given back
(no gaps), nor left pending forever."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from api_compat.error_middleware import engine_status
from api_compat.opsconductor.errors import OpsError
from api_compat.opsconductor.keys import OpsStore
from api_compat.opsconductor.targets import workflow_target
from engine.client import EngineClient
from engine.errors import EngineError, InvalidRequest
from engine.model import ExecutionKind, StepKind
from engine.store import RegistryEntry
from engine.store.opsconductor import TARGET_KIND, BranchTarget, OpsExecution, OpsJob
from engine.submission import SubmitRequest

log = logging.getLogger(__name__)
SOURCE = "opsconductor"
EXECUTION_LABEL = "opsconductor.execution"
JOB_LABEL = "opsconductor.job"
#: + a target's name: "<branch serial> <target serial>"
BRANCH_LABEL = "opsconductor.branch."


async def resolve_targets(store: OpsStore, target_ids: Sequence[int]) -> list[RegistryEntry]:
    """The targets of `target_ids`, in order; 422 naming those that do not exist or repeat."""
    repeated = sorted({i for i in target_ids if target_ids.count(i) > 1})
    if repeated:
        raise OpsError(422, f"target_ids names a target twice: {', '.join(map(str, repeated))}",
                       {"field": "target_ids", "received": list(target_ids)})
    entries = [await store.get_registered(TARGET_KIND, id=i) for i in target_ids]
    missing = [i for i, e in zip(target_ids, entries, strict=True) if e is None]
    if missing:
        raise OpsError(422, f"no target with id {', '.join(map(str, missing))}",
                       {"field": "target_ids", "received": list(target_ids)})
    return [e for e in entries if e is not None]


def workflow_of(job: OpsJob, targets: Sequence[RegistryEntry], file_targets: Mapping[str, Any]) -> str:
    """The job as a workflow (JSON, which is YAML): its actions as steps in a chain, on every target."""
    defined = {}
    for entry in targets:
        config = workflow_target(entry, file_targets)
        if config is not None:
            defined[entry.name] = config
    steps: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, action in enumerate(job.actions, 1):
        params = action.get("action_parameters") or {}
        name = str(action.get("action_name") or f"action-{i}")
        while name in names:
            name = f"{name}-{i}"
        names.add(name)
        step: dict[str, Any] = {"name": name, "run": params["command"], "description": action.get("action_type", "")}
        if steps:
            step["needs"] = [steps[-1]["name"]]
        if params.get("timeout") is not None:
            step["timeout"] = params["timeout"]
        steps.append(step)
    workflow = {"name": job.serial, "description": job.name, "targets": defined,
                "runs_on": [t.name for t in targets], "max_parallel_targets": max(len(targets), 1), "steps": steps}
    return json.dumps(workflow, ensure_ascii=False)


async def start_execution(engine: EngineClient, store: OpsStore, file_targets: Mapping[str, Any], job: OpsJob,
                          target_ids: Sequence[int]) -> OpsExecution:
    targets = await resolve_targets(store, target_ids)
    text = workflow_of(job, targets, file_targets)
    execution = await store.begin_ops_execution(
        job.id, [BranchTarget(t.id, t.serial or "", t.name) for t in targets])
    labels = {EXECUTION_LABEL: execution.serial, JOB_LABEL: job.serial}
    for branch in execution.branches:
        labels[BRANCH_LABEL + branch.target_name] = f"{branch.serial} {branch.target_serial}"
    try:
        submitted = await engine.submit(SubmitRequest(
            kind=ExecutionKind.WORKFLOW, source=SOURCE, workflow_text=text, name=f"{job.name} [{execution.serial}]",
            labels=labels))
    except EngineError as exc:
        await store.fail_ops_execution(execution.id, exc.message)
        status = 422 if isinstance(exc, InvalidRequest) else engine_status(exc)
        raise OpsError(status, f"execution {execution.serial} could not start: {exc.message}") from None
    except BaseException as exc:
        await store.fail_ops_execution(execution.id, f"it could not start: {exc}")
        raise
    steps = await engine.get_steps(submitted.id)
    by_target = {s.target: s.id for s in steps if s.kind is StepKind.BRANCH}
    await store.link_ops_execution(execution.id, submitted.id,
                                   {b.id: by_target[b.target_name] for b in execution.branches
                                    if b.target_name in by_target})
    linked = await store.get_ops_execution(id=execution.id)
    return linked if linked is not None else execution

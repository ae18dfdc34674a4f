"""Adoption at start: the queued executions a stopped or dead engine left (pending, never admitted)
are rebuilt from their stored rows so this engine can admit them.

What a row holds is what runs: a command's text, working directory, environment, target and plan
settings (markers, timeout, secret names); a workflow's source. The rebuilt plan's steps take the
stored steps' ids, so the rows already shown (and watched) are the ones that run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from engine.admission import stored_queue
from engine.errors import InvalidRequest
from engine.execution.run import ExecutionPlan
from engine.masking import Masker
from engine.model import COMPLETED_IN, Execution, ExecutionKind, Step
from engine.store import Store
from engine.submission import SECRETS_KEY, Planned, command_request_of, plan_command
from engine.workflow.plan import plan_workflow, stored_workflow_path


class NotRebuilt(Exception):
    """A queued execution this engine cannot run as it was submitted; the message says why."""


async def adopt_queue(store: Store, owner_alive: Callable[[str | None], bool], owner: str, *, user: str,
                      kill_grace: float, known_targets: Mapping[str, Any],
                      check_target: Callable[..., None]) -> tuple[list[Planned], list[tuple[Planned, str]]]:
    """The queued executions no live engine holds (their engine stopped, releasing them, or died),
    taken by `owner`: those rebuilt, and those that cannot be with why (they are to fail)."""
    adopted: list[Planned] = []
    failed: list[tuple[Planned, str]] = []
    for execution in await stored_queue(store):
        if execution.owner is not None and owner_alive(execution.owner):
            continue
        # another engine starting at the same moment may take it first
        if not await store.take_queued(execution.id, owner, execution.owner):
            continue
        stored = await store.get_steps(execution.id)
        execution.owner = owner
        try:
            adopted.append(await rebuild(execution, stored, user=execution.user or user, kill_grace=kill_grace,
                                         known_targets=known_targets, check_target=check_target))
        except (NotRebuilt, InvalidRequest) as exc:  # WorkflowError is an InvalidRequest
            failed.append((Planned(execution, stored, ExecutionPlan([], []), Masker([])),
                           f"could not be started after a restart: {exc}"))
    return adopted, failed


async def rebuild(execution: Execution, stored: list[Step], *, user: str, kill_grace: float,
                  known_targets: Mapping[str, Any], check_target: Callable[..., None]) -> Planned:
    """The plan of a stored queued execution, on its stored ids. Raises NotRebuilt, or what
    validating it again raises (InvalidRequest, WorkflowError)."""
    if execution.kind is ExecutionKind.COMMAND:
        planned = _rebuild_command(execution, user=user, kill_grace=kill_grace, check_target=check_target)
        candidates = [planned]
    elif execution.kind is ExecutionKind.WORKFLOW:
        candidates = await _rebuild_workflow(execution, user=user, kill_grace=kill_grace,
                                             known_targets=known_targets, check_target=check_target)
    else:
        raise NotRebuilt(f"this engine cannot run a {execution.kind.value} execution")
    for planned in candidates:
        if _take_stored_ids(planned, execution, stored):
            return planned
    raise NotRebuilt("its workflow no longer plans to the steps it was created with")


def _rebuild_command(execution: Execution, *, user: str, kill_grace: float,
                     check_target: Callable[..., None]) -> Planned:
    secrets = execution.metadata.get(SECRETS_KEY) or []
    given = sorted(name for name in secrets if name in execution.environment)
    if given:
        # their values were given with the request and are stored masked: running it with the
        # masks in their place would run something else than what was submitted
        raise NotRebuilt(f"the values of its secrets ({', '.join(given)}) are not kept; submit it again")
    request = command_request_of(execution, rerun_of=execution.rerun_of)
    return plan_command(request, user=user, kill_grace=kill_grace, check_target=check_target)


async def _rebuild_workflow(execution: Execution, *, user: str, kill_grace: float,
                            known_targets: Mapping[str, Any], check_target: Callable[..., None]) -> list[Planned]:
    from engine.workflow.load import read_workflow

    if not execution.workflow_source:
        raise NotRebuilt("it has no stored workflow")
    path = stored_workflow_path(execution)
    workflow = await read_workflow(path, text=execution.workflow_source, known_targets=set(known_targets))
    for target in execution.targets:
        check_target(target, workflow)
    candidates = []
    # submitted with its own targets, or with targets given over them (the stored steps tell which)
    for override in (None, list(execution.targets)):
        planned_execution, steps, plan, masker = plan_workflow(
            workflow, override, execution.name, user, {}, known_targets=known_targets, kill_grace=kill_grace,
        )
        candidates.append(Planned(planned_execution, steps, plan, masker, workflow.targets))
    return candidates


def _take_stored_ids(planned: Planned, execution: Execution, stored: list[Step]) -> bool:
    """Give the plan's steps the stored steps' ids and the stored execution; False when they do
    not match one to one (by kind, target and name)."""
    by_key = {(s.kind, s.target, s.name): s for s in stored}
    if len(by_key) != len(stored) or len(planned.steps) != len(stored):
        return False
    if any((s.kind, s.target, s.name) not in by_key for s in planned.steps):
        return False
    ids = {s.id: by_key[(s.kind, s.target, s.name)].id for s in planned.steps}
    for step in planned.steps:
        old = by_key[(step.kind, step.target, step.name)]
        step.id = old.id
        step.execution_id = execution.id
        step.created_at = old.created_at
        step.parent_id = ids.get(step.parent_id) if step.parent_id is not None else None
        # a step done in an earlier execution (rerun from the failed step) is done there still
        if done_in := old.metadata.get(COMPLETED_IN):
            _plan_of(planned, step).done_in = str(done_in)
    for step_plan in planned.plan.steps:
        step_plan.spec = dataclasses.replace(step_plan.spec, execution_id=execution.id)
    planned.execution = execution
    return True


def _plan_of(planned: Planned, step: Step) -> Any:
    for step_plan in planned.plan.steps:
        if step_plan.step is step:
            return step_plan
    raise InvalidRequest(f"step {step.name!r} has no plan")

"""The one table of allowed transitions per status, and the one mutator for each.

A missed transition is a bug in the engine (or a race it must handle), so it raises.
The store guards its writes with the same tables (`UPDATE ... WHERE status IN (allowed)`).
"""

from __future__ import annotations

from datetime import datetime

from engine.model import (
    TERMINAL_STEP,
    AbortReason,
    Execution,
    ExecutionStatus,
    Step,
    StepStatus,
    utcnow,
)

E = ExecutionStatus
S = StepStatus

#: target status -> statuses it may be entered from
EXECUTION_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    # a job whose worker went silent goes back to the queue for another attempt (engine.jobs)
    E.PENDING: frozenset({E.RUNNING}),
    E.RUNNING: frozenset({E.PENDING}),
    E.COMPLETED: frozenset({E.RUNNING}),
    E.FAILED: frozenset({E.PENDING, E.RUNNING}),
    E.CANCELLED: frozenset({E.PENDING, E.RUNNING}),
}

STEP_TRANSITIONS: dict[StepStatus, frozenset[StepStatus]] = {
    S.PENDING: frozenset(),
    S.RUNNING: frozenset({S.PENDING}),
    S.COMPLETED: frozenset({S.RUNNING}),
    S.FAILED: frozenset({S.PENDING, S.RUNNING}),
    S.SKIPPED: frozenset({S.PENDING}),
    S.CANCELLED: frozenset({S.PENDING, S.RUNNING}),
}


class TransitionError(RuntimeError):
    pass


def move_execution(
    execution: Execution,
    to: ExecutionStatus,
    *,
    exit_code: int | None = None,
    error: str | None = None,
    reason: AbortReason | None = None,
    at: datetime | None = None,
) -> None:
    if execution.status not in EXECUTION_TRANSITIONS[to]:
        raise TransitionError(f"execution {execution.id}: {execution.status} -> {to} is not allowed")
    now = at or utcnow()
    execution.status = to
    if to is E.RUNNING:
        execution.started_at = now
    elif to.is_terminal:
        execution.completed_at = now
        if execution.started_at is None:
            execution.started_at = now
        if exit_code is not None:
            execution.exit_code = exit_code
        if error is not None:
            execution.error_message = error
        if reason is not None:
            execution.abort_reason = reason


def can_move_step(step: Step, to: StepStatus) -> bool:
    return step.status in STEP_TRANSITIONS[to]


def move_step(
    step: Step,
    to: StepStatus,
    *,
    exit_code: int | None = None,
    error: str | None = None,
    reason: AbortReason | None = None,
    at: datetime | None = None,
) -> None:
    if step.status not in STEP_TRANSITIONS[to]:
        raise TransitionError(f"step {step.name!r} ({step.id}): {step.status} -> {to} is not allowed")
    now = at or utcnow()
    step.status = to
    if to is S.RUNNING:
        step.started_at = now
    elif to in TERMINAL_STEP:  # is_terminal without the property: twice for each marker step
        step.completed_at = now
        if exit_code is not None:
            step.exit_code = exit_code
        if error is not None:
            step.error_message = error
        if reason is not None:
            step.abort_reason = reason
        if to is S.COMPLETED:
            step.progress = 100.0 if step.progress is not None else step.progress

"""A runner's job as the API answers it, from its execution."""

from __future__ import annotations

from typing import Any

from api_compat.rustci.activity import job_id_of
from api_compat.rustci.wire import RunnerJobStatus, rfc3339
from engine.model import Execution, ExecutionStatus

_STATUS = {ExecutionStatus.PENDING: RunnerJobStatus.QUEUED, ExecutionStatus.RUNNING: RunnerJobStatus.RUNNING,
           ExecutionStatus.COMPLETED: RunnerJobStatus.COMPLETED, ExecutionStatus.FAILED: RunnerJobStatus.FAILED,
           ExecutionStatus.CANCELLED: RunnerJobStatus.CANCELLED}


def job_status(execution: Execution) -> RunnerJobStatus:
    return _STATUS.get(execution.status, RunnerJobStatus.FAILED)


def duration(execution: Execution) -> float | None:
    if execution.started_at is None or execution.completed_at is None:
        return None
    return round((execution.completed_at - execution.started_at).total_seconds(), 3)


def job_json(execution: Execution) -> dict[str, Any]:
    return {"job_id": job_id_of(execution.id), "name": execution.name, "status": job_status(execution).value,
            "created_at": rfc3339(execution.created_at), "started_at": rfc3339(execution.started_at),
            "completed_at": rfc3339(execution.completed_at), "duration": duration(execution),
            "exit_code": execution.exit_code,
            # ours: the execution it is (stepflow ls, the Monitor API), and why it failed
            "execution_id": execution.id, "error_message": execution.error_message}

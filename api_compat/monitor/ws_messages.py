"""StepFlow Monitor WebSocket messages: what each engine event becomes, as JSON text.

Every message has the documented envelope `{"type", "data", "timestamp"}`. Pure functions: who
receives a message, and when, is the hub's business (`api_compat.monitor.ws`).
"""

from __future__ import annotations

from typing import Any

from api_compat.monitor.envelope import dumps, now_iso
from api_compat.monitor.wire import iso, log_level, step_dict
from engine.events import LinesLogged
from engine.model import Artifact, Execution, Step


def message(type_: str, data: dict[str, Any]) -> str:
    return dumps({"type": type_, "data": data, "timestamp": now_iso()})


def error_message(code: str, text: str, execution_id: str | None = None, **extra: Any) -> str:
    return message(
        "error",
        {
            "execution_id": execution_id,
            "error_message": text,
            "error_code": code,
            "timestamp": now_iso(),
            **extra,
        },
    )


def run_failed(ex: Execution, last_stderr: str | None = None) -> str:
    """The document's `error` example ("Script execution failed", `EXECUTION_ERROR`) for a run that
    failed: the engine's reason (a step's STEP_ERROR text, "exit code 127", ...), with the run's last
    stderr line when it wrote one (the shell's "not found" of a missing program). Its timestamp is
    when the run ended."""
    reason = ex.error_message or (f"exit code {ex.exit_code}" if ex.exit_code is not None else "the run failed")
    text = f"execution failed: {reason}"
    if last_stderr:
        text += f" (last error output: {last_stderr})"
    extra: dict[str, Any] = {"exit_code": ex.exit_code}
    if ex.completed_at is not None:
        extra["timestamp"] = iso(ex.completed_at)
    return error_message("EXECUTION_ERROR", text, ex.id, **extra)


def dropped_message(execution_id: str, count: int, first: int, last: int, why: str) -> str:
    """`LOG_ENTRIES_DROPPED`: `count` entries (seq `first`..`last`, -1 when unknown) not sent."""
    return error_message(
        "LOG_ENTRIES_DROPPED",
        f"{count} log entries were not sent {why}; fetch them with GET /api/executions/{execution_id}/logs",
        execution_id,
        dropped_count=count,
        first_seq=first if first >= 0 else None,
        last_seq=last if last >= 0 else None,
    )


def log_entries(event: LinesLogged, count: int, step_name: str | None = None) -> list[str]:
    """One `log_entry` per line, for the first `count` lines of `event` (`step_name`: ours, the
    name of the step `step_id` names, so that lines of parallel steps can be told apart)."""
    execution_id, step_id = event.exec_id, event.step_id
    level = log_level(event.stream)
    ts = iso(event.timestamp)
    stream = event.stream.value
    return [
        message(
            "log_entry",
            {
                "execution_id": execution_id,
                "step_id": step_id,
                "step_name": step_name,
                "content": line,
                "timestamp": ts,
                "level": level,
                "stream": stream,
                "seq": event.start_seq + i,
            },
        )
        for i, line in enumerate(event.lines[:count])
    ]


def step_update(step: Step) -> str:
    return message("step_update", {"execution_id": step.execution_id, "step": step_dict(step)})


def execution_started(ex: Execution) -> str:
    return message(
        "execution_started",
        {
            "execution_id": ex.id,
            "name": ex.name,
            "command": ex.command,
            "started_at": iso(ex.started_at),
            "status": ex.status.value,
        },
    )


def execution_completed(ex: Execution, artifacts_count: int) -> str:
    return message(
        "execution_completed",
        {
            "execution_id": ex.id,
            "status": ex.status.value,
            "exit_code": ex.exit_code,
            "completed_at": iso(ex.completed_at),
            "duration_seconds": None if ex.duration_seconds is None else round(ex.duration_seconds, 3),
            "total_steps": ex.total_steps,
            "artifacts_count": artifacts_count,
            "error_message": ex.error_message,
            "abort_reason": ex.abort_reason.value if ex.abort_reason else None,
        },
    )


def execution_deleted(execution_id: str) -> str:
    """Ours (the document has no such message): an execution and everything of it are gone."""
    return message("execution_deleted", {"execution_id": execution_id})


def artifact_created(art: Artifact) -> str:
    return message(
        "artifact_created",
        {
            "execution_id": art.execution_id,
            "artifact": {
                "id": art.id,
                "name": art.name,
                "file_name": art.file_name,
                "download_url": art.download_url,
                "step_id": art.step_id,
                "file_size": art.file_size,
                "mime_type": art.mime_type,
                "artifact_type": art.artifact_type.value,
            },
        },
    )

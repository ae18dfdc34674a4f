"""The StepFlow Monitor API's wire format: domain objects as the plain dicts of its execution detail,
steps, artifacts and log lines. `api_compat.monitor.wire_decode` turns them back into domain objects
(for the remote client). The CLI's `--json` has its own (`stepflow_tui.cli.json_views`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.model import Artifact, Execution, LogLine, Step, Stream

#: a log line's `level` in the API: stdout info, stderr error, the engine's own lines warning
STREAM_LEVEL = {Stream.STDOUT: "info", Stream.STDERR: "error", Stream.SYSTEM: "warning"}
LEVEL_STREAM = {level: stream for stream, level in STREAM_LEVEL.items()}


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:  # the store and the engine already hand out UTC: skip the conversion
        value = value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def execution_dict(ex: Execution) -> dict[str, Any]:
    return {
        "id": ex.id,
        "name": ex.name,
        "command": ex.command,
        "working_directory": ex.working_directory,
        "status": ex.status.value,
        "exit_code": ex.exit_code,
        "error_message": ex.error_message,
        "created_at": iso(ex.created_at),
        "started_at": iso(ex.started_at),
        "completed_at": iso(ex.completed_at),
        "environment": dict(ex.environment),
        "user": ex.user,
        "tags": list(ex.tags),
        "total_steps": ex.total_steps,
        "completed_steps": ex.completed_steps,
        "current_step_index": ex.current_step_index,
        "duration_seconds": _round(ex.duration_seconds),
        "progress_percentage": ex.progress_percentage,
        "metadata": dict(ex.metadata),
        # ours, beyond the documented fields
        "kind": ex.kind.value,
        "targets": list(ex.targets),
        "abort_reason": ex.abort_reason.value if ex.abort_reason else None,
        "rerun_of": ex.rerun_of,
    }


def step_dict(step: Step) -> dict[str, Any]:
    return {
        "id": step.id,
        "execution_id": step.execution_id,
        "name": step.name,
        "description": step.description,
        "index": step.index,
        "status": step.status.value,
        "exit_code": step.exit_code,
        "error_message": step.error_message,
        "created_at": iso(step.created_at),
        "started_at": iso(step.started_at),
        "completed_at": iso(step.completed_at),
        "estimated_duration": step.estimated_duration,
        "stop_on_error": step.stop_on_error,
        "duration_seconds": _round(step.duration_seconds),
        "metadata": dict(step.metadata),
        # ours
        "parent_id": step.parent_id,
        "kind": step.kind.value,
        "target": step.target,
        "progress": step.progress,
        "abort_reason": step.abort_reason.value if step.abort_reason else None,
        "cpu_percent": step.cpu_percent,
        "rss_bytes": step.rss_bytes,
    }


def artifact_dict(artifact: Artifact) -> dict[str, Any]:
    return {
        "id": artifact.id,
        "execution_id": artifact.execution_id,
        "step_id": artifact.step_id,
        "name": artifact.name,
        "description": artifact.description,
        "file_path": artifact.file_path,
        "file_name": artifact.file_name,
        "file_size": artifact.file_size,
        "mime_type": artifact.mime_type,
        "artifact_type": artifact.artifact_type.value,
        "created_at": iso(artifact.created_at),
        "tags": list(artifact.tags),
        "is_public": artifact.is_public,
        "retention_days": artifact.retention_days,
        "download_url": artifact.download_url,
        # ours
        "sha256": artifact.sha256,
    }


def log_level(stream: Stream) -> str:
    return STREAM_LEVEL.get(stream, "info")


def line_dict(line: LogLine) -> dict[str, object]:
    """A line of `GET /api/executions/{id}/logs` (its execution id is the response's)."""
    return {
        "seq": line.seq,
        "step_id": line.step_id,
        "stream": line.stream.value,
        "level": log_level(line.stream),
        "timestamp": iso(line.timestamp),
        "content": line.text,
    }

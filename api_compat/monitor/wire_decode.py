"""The inverse of `api_compat.monitor.wire`: StepFlow Monitor API dicts back into domain objects.

Used by the remote client (`stepflow tui --connect`). Lenient by design: a field the server left
out (an older server, the reference implementation) takes the domain's default, an unknown enum
value too, so one odd row never breaks a listing. `execution_from_dict(execution_dict(e)) == e` for
every field the API carries (not `workflow_source` nor `owner`, which stay on the server).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from api_compat.monitor.wire import LEVEL_STREAM
from engine.model import (
    AbortReason,
    Artifact,
    ArtifactType,
    Execution,
    ExecutionKind,
    ExecutionStatus,
    LogLine,
    Step,
    StepKind,
    StepStatus,
    Stream,
    utcnow,
)

E = TypeVar("E", bound=Enum)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as an aware UTC datetime (None stays None)."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def enum_or(cls: type[E], value: Any, default: E | None = None) -> E | None:
    """`cls(value)`, or `default` when the value is missing or not one of the enum's."""
    if value is None:
        return default
    try:
        return cls(value)
    except ValueError:
        return default


def execution_from_dict(d: Mapping[str, Any]) -> Execution:
    return Execution(
        id=d["id"],
        name=d.get("name") or "",
        kind=enum_or(ExecutionKind, d.get("kind"), ExecutionKind.COMMAND),  # type: ignore[arg-type]
        command=d.get("command") or "",
        working_directory=d.get("working_directory") or "",
        status=enum_or(ExecutionStatus, d.get("status"), ExecutionStatus.PENDING),  # type: ignore[arg-type]
        exit_code=d.get("exit_code"),
        error_message=d.get("error_message"),
        abort_reason=enum_or(AbortReason, d.get("abort_reason")),
        created_at=parse_time(d.get("created_at")) or utcnow(),
        started_at=parse_time(d.get("started_at")),
        completed_at=parse_time(d.get("completed_at")),
        environment=dict(d.get("environment") or {}),
        user=d.get("user") or "",
        tags=list(d.get("tags") or []),
        metadata=dict(d.get("metadata") or {}),
        targets=list(d.get("targets") or []),
        total_steps=d.get("total_steps") or 0,
        completed_steps=d.get("completed_steps") or 0,
        current_step_index=d.get("current_step_index"),
        progress_percentage=d.get("progress_percentage") or 0.0,
        rerun_of=d.get("rerun_of"),
    )


def step_from_dict(d: Mapping[str, Any], execution_id: str | None = None) -> Step:
    """`execution_id` for a step dict that does not carry its own (the reference server's)."""
    return Step(
        id=d["id"],
        execution_id=d.get("execution_id") or execution_id or "",
        name=d.get("name") or "",
        kind=enum_or(StepKind, d.get("kind"), StepKind.MARKER),  # type: ignore[arg-type]
        parent_id=d.get("parent_id"),
        index=d.get("index") or 0,
        description=d.get("description") or "",
        status=enum_or(StepStatus, d.get("status"), StepStatus.PENDING),  # type: ignore[arg-type]
        exit_code=d.get("exit_code"),
        error_message=d.get("error_message"),
        abort_reason=enum_or(AbortReason, d.get("abort_reason")),
        created_at=parse_time(d.get("created_at")) or utcnow(),
        started_at=parse_time(d.get("started_at")),
        completed_at=parse_time(d.get("completed_at")),
        estimated_duration=d.get("estimated_duration"),
        stop_on_error=bool(d.get("stop_on_error")),
        progress=d.get("progress"),
        metadata=dict(d.get("metadata") or {}),
        target=d.get("target") or "local",
        cpu_percent=d.get("cpu_percent"),
        rss_bytes=d.get("rss_bytes"),
    )


def artifact_from_dict(d: Mapping[str, Any], execution_id: str | None = None) -> Artifact:
    """`execution_id` for an artifact dict without its own (`artifact_created` messages)."""
    return Artifact(
        id=d["id"],
        execution_id=d.get("execution_id") or execution_id or "",
        step_id=d.get("step_id"),
        name=d.get("name") or "",
        file_name=d.get("file_name") or "",
        file_path=d.get("file_path") or "",
        file_size=d.get("file_size") or 0,
        mime_type=d.get("mime_type") or "application/octet-stream",
        artifact_type=enum_or(ArtifactType, d.get("artifact_type"), ArtifactType.OTHER),  # type: ignore[arg-type]
        sha256=d.get("sha256") or "",
        description=d.get("description") or "",
        created_at=parse_time(d.get("created_at")) or utcnow(),
        tags=list(d.get("tags") or []),
        is_public=bool(d.get("is_public", True)),
        retention_days=d.get("retention_days") or 30,
    )


def line_from_dict(d: Mapping[str, Any], execution_id: str) -> LogLine:
    """A log line of `GET /api/executions/{id}/logs` or a `log_entry` message. Without a `stream`
    (the reference server's entries), the `level` tells it."""
    stream = enum_or(Stream, d.get("stream")) or LEVEL_STREAM.get(d.get("level") or "", Stream.STDOUT)
    return LogLine(
        execution_id=d.get("execution_id") or execution_id,
        step_id=d.get("step_id"),
        seq=int(d["seq"]),
        stream=stream,
        timestamp=parse_time(d.get("timestamp")) or utcnow(),
        text=d.get("content") or "",
    )

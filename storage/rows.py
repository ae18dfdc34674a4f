"""Domain objects to table rows and back. Enums are stored as their values, read back as enums."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.model import (
    AbortReason,
    Artifact,
    ArtifactType,
    Execution,
    ExecutionKind,
    ExecutionStatus,
    Step,
    StepKind,
    StepStatus,
)
from engine.surrogates import replace_in, replace_surrogates


def _text(value: str | None) -> str | None:
    # what UTF-8 cannot encode would fail the whole batch (see engine.surrogates); ASCII is the
    # usual case and costs one check
    return value if value is None or value.isascii() else replace_surrogates(value)


def _reason(value: str | None) -> AbortReason | None:
    return None if value is None else AbortReason(value)


def execution_row(e: Execution) -> dict[str, Any]:
    return {
        "id": e.id,
        "name": _text(e.name),
        "kind": e.kind.value,
        "command": _text(e.command),
        "working_directory": _text(e.working_directory),
        "status": e.status.value,
        "exit_code": e.exit_code,
        "error_message": _text(e.error_message),
        "abort_reason": None if e.abort_reason is None else e.abort_reason.value,
        "created_at": e.created_at,
        "started_at": e.started_at,
        "completed_at": e.completed_at,
        "environment": replace_in(e.environment),
        "user": _text(e.user),
        "tags": replace_in(e.tags),
        "metadata": replace_in(e.metadata),
        "targets": replace_in(e.targets),
        "total_steps": e.total_steps,
        "completed_steps": e.completed_steps,
        "current_step_index": e.current_step_index,
        "progress_percentage": e.progress_percentage,
        "workflow_source": _text(e.workflow_source),
        "rerun_of": e.rerun_of,
        "owner": e.owner,
        "priority": e.priority,
        "admitted_at": e.admitted_at,
        "source": _text(e.source),
        "labels": replace_in(e.labels),
    }


def execution_from(row: Mapping[Any, Any]) -> Execution:
    return Execution(
        id=row["id"],
        name=row["name"],
        kind=ExecutionKind(row["kind"]),
        command=row["command"],
        working_directory=row["working_directory"],
        status=ExecutionStatus(row["status"]),
        exit_code=row["exit_code"],
        error_message=row["error_message"],
        abort_reason=_reason(row["abort_reason"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        environment=row["environment"],
        user=row["user"],
        tags=row["tags"],
        metadata=row["metadata"],
        targets=row["targets"],
        total_steps=row["total_steps"],
        completed_steps=row["completed_steps"],
        current_step_index=row["current_step_index"],
        progress_percentage=row["progress_percentage"],
        workflow_source=row["workflow_source"],
        rerun_of=row["rerun_of"],
        owner=row["owner"],
        priority=row["priority"],
        admitted_at=row["admitted_at"],
        source=row["source"],
        labels=row["labels"],
    )


def step_row(s: Step) -> dict[str, Any]:
    return {
        "id": s.id,
        "execution_id": s.execution_id,
        "parent_id": s.parent_id,
        "name": _text(s.name),
        "kind": s.kind.value,
        "step_index": s.index,
        "description": _text(s.description),
        "status": s.status.value,
        "exit_code": s.exit_code,
        "error_message": _text(s.error_message),
        "abort_reason": None if s.abort_reason is None else s.abort_reason.value,
        "created_at": s.created_at,
        "started_at": s.started_at,
        "completed_at": s.completed_at,
        "estimated_duration": s.estimated_duration,
        "stop_on_error": s.stop_on_error,
        "progress": s.progress,
        "metadata": replace_in(s.metadata),
        "target": _text(s.target),
        "cpu_percent": s.cpu_percent,
        "rss_bytes": s.rss_bytes,
    }


#: the columns `step_values` fills, in its order (every column but the integer key)
STEP_WRITE_COLUMNS = (
    "id", "execution_id", "parent_id", "name", "kind", "step_index", "description", "status", "exit_code",
    "error_message", "abort_reason", "created_at", "started_at", "completed_at", "estimated_duration",
    "stop_on_error", "progress", "metadata", "target", "cpu_percent", "rss_bytes",
)
_dumps = json.JSONEncoder().encode


def _iso(value: datetime | None) -> str | None:
    """As storage.tables.UtcDateTime stores it."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def step_values(s: Step) -> tuple[Any, ...]:
    """`step_row` as the database takes it (STEP_WRITE_COLUMNS): text datetimes, JSON text, 0/1,
    what SQLAlchemy's types make of it (tests/test_storage.py compares them), for the write path
    that goes under SQLAlchemy: a command printing markers makes thousands of steps a second."""
    metadata = s.metadata
    return (
        s.id,
        s.execution_id,
        s.parent_id,
        _text(s.name),
        s.kind.value,
        s.index,
        _text(s.description),
        s.status.value,
        s.exit_code,
        _text(s.error_message),
        None if s.abort_reason is None else s.abort_reason.value,
        _iso(s.created_at),
        _iso(s.started_at),
        _iso(s.completed_at),
        s.estimated_duration,
        int(s.stop_on_error),
        s.progress,
        "{}" if not metadata else _dumps(replace_in(metadata)),
        _text(s.target),
        s.cpu_percent,
        s.rss_bytes,
    )


def step_from(row: Mapping[Any, Any]) -> Step:
    return Step(
        id=row["id"],
        execution_id=row["execution_id"],
        name=row["name"],
        kind=StepKind(row["kind"]),
        parent_id=row["parent_id"],
        index=row["step_index"],
        description=row["description"],
        status=StepStatus(row["status"]),
        exit_code=row["exit_code"],
        error_message=row["error_message"],
        abort_reason=_reason(row["abort_reason"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        estimated_duration=row["estimated_duration"],
        stop_on_error=row["stop_on_error"],
        progress=row["progress"],
        metadata=row["metadata"],
        target=row["target"],
        cpu_percent=row["cpu_percent"],
        rss_bytes=row["rss_bytes"],
    )


def artifact_row(a: Artifact) -> dict[str, Any]:
    return {
        "id": a.id,
        "execution_id": a.execution_id,
        "step_id": a.step_id,
        "name": _text(a.name),
        "file_name": _text(a.file_name),
        "file_path": _text(a.file_path),
        "file_size": a.file_size,
        "mime_type": a.mime_type,
        "artifact_type": a.artifact_type.value,
        "sha256": a.sha256,
        "description": _text(a.description),
        "created_at": a.created_at,
        "tags": replace_in(a.tags),
        "is_public": a.is_public,
        "retention_days": a.retention_days,
    }


def artifact_from(row: Mapping[Any, Any]) -> Artifact:
    return Artifact(
        id=row["id"],
        execution_id=row["execution_id"],
        step_id=row["step_id"],
        name=row["name"],
        file_name=row["file_name"],
        file_path=row["file_path"],
        file_size=row["file_size"],
        mime_type=row["mime_type"],
        artifact_type=ArtifactType(row["artifact_type"]),
        sha256=row["sha256"],
        description=row["description"],
        created_at=row["created_at"],
        tags=row["tags"],
        is_public=row["is_public"],
        retention_days=row["retention_days"],
    )


# -- the read path (storage.reads): plain tuples in the order of these columns -------------------------
EXECUTION_COLUMNS = (
    "id", "name", "kind", "command", "working_directory", "status", "exit_code", "error_message",
    "abort_reason", "created_at", "started_at", "completed_at", "environment", "user", "tags", "metadata",
    "targets", "total_steps", "completed_steps", "current_step_index", "progress_percentage",
    "workflow_source", "rerun_of", "owner",
)
STEP_COLUMNS = (
    "id", "execution_id", "parent_id", "name", "kind", "step_index", "description", "status", "exit_code",
    "error_message", "abort_reason", "created_at", "started_at", "completed_at", "estimated_duration",
    "stop_on_error", "progress", "metadata", "target", "cpu_percent", "rss_bytes",
)
ARTIFACT_COLUMNS = (
    "id", "execution_id", "step_id", "name", "file_name", "file_path", "file_size", "mime_type",
    "artifact_type", "sha256", "description", "created_at", "tags", "is_public", "retention_days",
)

# enum lookups by stored value: a dict is several times cheaper than calling the enum
_EXECUTION_KINDS = {k.value: k for k in ExecutionKind}
_EXECUTION_STATUSES = {s.value: s for s in ExecutionStatus}
_STEP_KINDS = {k.value: k for k in StepKind}
_STEP_STATUSES = {s.value: s for s in StepStatus}
_ARTIFACT_TYPES = {t.value: t for t in ArtifactType}
_REASONS: dict[str | None, AbortReason | None] = {None: None, **{r.value: r for r in AbortReason}}
_loads = json.JSONDecoder().decode
_fromiso = datetime.fromisoformat


def _json(text: str) -> Any:
    # most rows hold empty environments, tags and metadata
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return _loads(text)


def _when(text: str | None) -> datetime | None:
    return None if text is None else _fromiso(text)


def _enum(table: Mapping[Any, Any], value: Any, kind: Callable[[Any], Any]) -> Any:
    found = table.get(value)
    # an unknown value raises as the enum itself would
    return found if found is not None or value is None else kind(value)


def execution_from_values(r: Sequence[Any]) -> Execution:
    """A row of EXECUTION_COLUMNS, as sqlite3 returns it (text datetimes and JSON)."""
    return Execution(
        id=r[0],
        name=r[1],
        kind=_enum(_EXECUTION_KINDS, r[2], ExecutionKind),
        command=r[3],
        working_directory=r[4],
        status=_enum(_EXECUTION_STATUSES, r[5], ExecutionStatus),
        exit_code=r[6],
        error_message=r[7],
        abort_reason=_enum(_REASONS, r[8], AbortReason),
        created_at=_fromiso(r[9]),
        started_at=_when(r[10]),
        completed_at=_when(r[11]),
        environment=_json(r[12]),
        user=r[13],
        tags=_json(r[14]),
        metadata=_json(r[15]),
        targets=_json(r[16]),
        total_steps=r[17],
        completed_steps=r[18],
        current_step_index=r[19],
        progress_percentage=r[20],
        workflow_source=r[21],
        rerun_of=r[22],
        owner=r[23],
    )


def step_from_values(r: Sequence[Any]) -> Step:
    """A row of STEP_COLUMNS."""
    return Step(
        id=r[0],
        execution_id=r[1],
        parent_id=r[2],
        name=r[3],
        kind=_enum(_STEP_KINDS, r[4], StepKind),
        index=r[5],
        description=r[6],
        status=_enum(_STEP_STATUSES, r[7], StepStatus),
        exit_code=r[8],
        error_message=r[9],
        abort_reason=_enum(_REASONS, r[10], AbortReason),
        created_at=_fromiso(r[11]),
        started_at=_when(r[12]),
        completed_at=_when(r[13]),
        estimated_duration=r[14],
        stop_on_error=bool(r[15]),
        progress=r[16],
        metadata=_json(r[17]),
        target=r[18],
        cpu_percent=r[19],
        rss_bytes=r[20],
    )


def artifact_from_values(r: Sequence[Any]) -> Artifact:
    """A row of ARTIFACT_COLUMNS."""
    return Artifact(
        id=r[0],
        execution_id=r[1],
        step_id=r[2],
        name=r[3],
        file_name=r[4],
        file_path=r[5],
        file_size=r[6],
        mime_type=r[7],
        artifact_type=_enum(_ARTIFACT_TYPES, r[8], ArtifactType),
        sha256=r[9],
        description=r[10],
        created_at=_fromiso(r[11]),
        tags=_json(r[12]),
        is_public=bool(r[13]),
        retention_days=r[14],
    )

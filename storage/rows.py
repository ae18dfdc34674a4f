"""Domain objects to table rows and back. Enums are stored as their values, read back as enums."""

from __future__ import annotations

from collections.abc import Mapping
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


def _reason(value: str | None) -> AbortReason | None:
    return None if value is None else AbortReason(value)


def execution_row(e: Execution) -> dict[str, Any]:
    return {
        "id": e.id,
        "name": e.name,
        "kind": e.kind.value,
        "command": e.command,
        "working_directory": e.working_directory,
        "status": e.status.value,
        "exit_code": e.exit_code,
        "error_message": e.error_message,
        "abort_reason": None if e.abort_reason is None else e.abort_reason.value,
        "created_at": e.created_at,
        "started_at": e.started_at,
        "completed_at": e.completed_at,
        "environment": e.environment,
        "user": e.user,
        "tags": e.tags,
        "metadata": e.metadata,
        "targets": e.targets,
        "total_steps": e.total_steps,
        "completed_steps": e.completed_steps,
        "current_step_index": e.current_step_index,
        "progress_percentage": e.progress_percentage,
        "workflow_source": e.workflow_source,
        "rerun_of": e.rerun_of,
        "owner": e.owner,
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
    )


def step_row(s: Step) -> dict[str, Any]:
    return {
        "id": s.id,
        "execution_id": s.execution_id,
        "parent_id": s.parent_id,
        "name": s.name,
        "kind": s.kind.value,
        "step_index": s.index,
        "description": s.description,
        "status": s.status.value,
        "exit_code": s.exit_code,
        "error_message": s.error_message,
        "abort_reason": None if s.abort_reason is None else s.abort_reason.value,
        "created_at": s.created_at,
        "started_at": s.started_at,
        "completed_at": s.completed_at,
        "estimated_duration": s.estimated_duration,
        "stop_on_error": s.stop_on_error,
        "progress": s.progress,
        "metadata": s.metadata,
        "target": s.target,
        "cpu_percent": s.cpu_percent,
        "rss_bytes": s.rss_bytes,
    }


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
        "name": a.name,
        "file_name": a.file_name,
        "file_path": a.file_path,
        "file_size": a.file_size,
        "mime_type": a.mime_type,
        "artifact_type": a.artifact_type.value,
        "sha256": a.sha256,
        "description": a.description,
        "created_at": a.created_at,
        "tags": a.tags,
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

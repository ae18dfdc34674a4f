"""What `stepflow ls --json` and `show --json` print: executions, steps and artifacts as plain dicts.

The CLI's own format (the API's formats are the API's, in `api_compat`). Its field names are those
the CLI has always printed, which are the domain objects' attribute names: each dict is built from
one list of names, so adding a field here is one edit."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from engine.model import Artifact, Execution, Step

EXECUTION_FIELDS = (
    "id", "name", "command", "working_directory", "status", "exit_code", "error_message",
    "created_at", "started_at", "completed_at", "environment", "user", "tags", "total_steps",
    "completed_steps", "current_step_index", "duration_seconds", "progress_percentage", "metadata",
    "kind", "targets", "abort_reason", "rerun_of",
)
STEP_FIELDS = (
    "id", "execution_id", "name", "description", "index", "status", "exit_code", "error_message",
    "created_at", "started_at", "completed_at", "estimated_duration", "stop_on_error", "duration_seconds",
    "metadata", "parent_id", "kind", "target", "progress", "abort_reason", "cpu_percent", "rss_bytes",
)
ARTIFACT_FIELDS = (
    "id", "execution_id", "step_id", "name", "description", "file_path", "file_name", "file_size",
    "mime_type", "artifact_type", "created_at", "tags", "is_public", "retention_days", "download_url",
    "sha256",
)
#: printed to the millisecond
_ROUNDED = frozenset({"duration_seconds"})


def iso(value: datetime | None) -> str | None:
    """UTC, ISO 8601 with a `Z`."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list | tuple):
        return list(value)
    return value


def _fields(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(obj, name)
        if name in _ROUNDED and value is not None:
            value = round(value, 3)
        out[name] = _plain(value)
    return out


def execution_json(execution: Execution) -> dict[str, Any]:
    return _fields(execution, EXECUTION_FIELDS)


def step_json(step: Step) -> dict[str, Any]:
    return _fields(step, STEP_FIELDS)


def artifact_json(artifact: Artifact) -> dict[str, Any]:
    return _fields(artifact, ARTIFACT_FIELDS)

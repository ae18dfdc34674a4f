"""The columns of the tables the reads turn into domain objects, in the tables' order, and which of
them hold JSON: what their row mappings (storage.rows) are made from without importing SQLAlchemy,
which costs ~0.18 s, more than the whole start-up budget of `stepflow ls` (issue 16); and those of
the tables the engine's store reads and writes in plain SQL (the queue, the registry, OpsConductor's),
which `stepflow exec` opens without SQLAlchemy.

storage/tables.py defines the tables and checks at import that they have exactly these columns: a
column added there (with its migration) is added here too, or nothing that imports it starts (the
store's tests do)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple


class Columns(NamedTuple):
    table: str
    names: tuple[str, ...]
    #: the columns of SQLAlchemy's JSON type (its binds make the text; sqlite3 reads the text)
    json: frozenset[str] = frozenset()


EXECUTIONS = Columns(
    "executions",
    ("pk", "id", "name", "kind", "command", "working_directory", "status", "exit_code", "error_message",
     "abort_reason", "created_at", "started_at", "completed_at", "environment", "user", "tags", "metadata",
     "targets", "total_steps", "completed_steps", "current_step_index", "progress_percentage",
     "workflow_source", "rerun_of", "owner", "priority", "admitted_at", "source", "labels"),
    frozenset({"environment", "tags", "metadata", "targets", "labels"}),
)
STEPS = Columns(
    "steps",
    ("pk", "id", "execution_id", "parent_id", "name", "kind", "step_index", "description", "status",
     "exit_code", "error_message", "abort_reason", "created_at", "started_at", "completed_at",
     "estimated_duration", "stop_on_error", "progress", "metadata", "target", "cpu_percent", "rss_bytes"),
    frozenset({"metadata"}),
)
ARTIFACTS = Columns(
    "artifacts",
    ("id", "execution_id", "step_id", "name", "file_name", "file_path", "file_size", "mime_type",
     "artifact_type", "sha256", "description", "created_at", "tags", "is_public", "retention_days"),
    frozenset({"tags"}),
)
QUEUE_ITEMS = Columns(
    "queue_items",
    ("pk", "id", "queue", "payload", "priority", "status", "worker", "attempt", "max_attempts", "created_at",
     "claimed_at", "heartbeat_at", "finished_at", "result", "execution_id", "labels"),
    frozenset({"labels"}),
)
REGISTRY = Columns(
    "registry",
    ("id", "kind", "serial", "name", "data", "created_at", "updated_at"),
    frozenset({"data"}),
)
OPS_JOBS = Columns(
    "ops_jobs",
    ("id", "uuid", "serial", "name", "description", "job_type", "actions", "target_ids", "scheduled_at",
     "schedule_state", "created_at", "updated_at"),
    frozenset({"actions", "target_ids"}),
)
OPS_EXECUTIONS = Columns(
    "ops_executions",
    ("id", "uuid", "serial", "job_id", "number", "execution_pk", "execution_id", "status", "started_at",
     "completed_at", "duration", "error", "created_at"),
)
OPS_BRANCHES = Columns(
    "ops_branches",
    ("id", "uuid", "serial", "ops_execution_id", "number", "job_id", "target_id", "target_serial", "target_name",
     "step_pk", "step_id", "status", "started_at", "completed_at", "duration", "exit_code", "error", "created_at"),
)

#: the most lines one row of log_spans covers (see storage/tables.py, where it is explained)
MAX_SPAN_LINES = 10_000


def to_iso(value: datetime) -> str:
    """How a datetime is stored: ISO 8601 UTC text of one fixed width (text order is time order); a
    naive datetime is taken to be UTC."""
    if value.tzinfo is UTC:  # the usual case (engine.model.utcnow), a third of the cost
        return value.isoformat(timespec="microseconds")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")

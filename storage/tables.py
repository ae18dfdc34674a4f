"""The tables (SQLAlchemy Core). Schema changes go through migrations (storage/migrations); a test
checks that the migrated schema matches these definitions.

Datetimes are ISO-8601 UTC text of one fixed width (so text order is time order), except a log
line's timestamp, an epoch float: it is per line, and 8 bytes beat 32 there.

Log lines refer to their execution and step by integer keys (`executions.pk`, `steps.pk`) rather
than by the 36-character ids: measured, a million lines insert ~1.6x faster and take half the space
(the ids would be repeated in every row and in both indexes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)

from storage import columns
from storage.columns import MAX_SPAN_LINES, to_iso  # noqa: F401 - the tables' names for them

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`; read back as aware UTC.
    A naive datetime is taken to be UTC."""

    impl = String(32)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> str | None:
        return None if value is None else to_iso(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value)


executions = Table(
    "executions",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("id", String, nullable=False, unique=True),
    Column("name", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("command", Text, nullable=False),
    Column("working_directory", String, nullable=False),
    Column("status", String, nullable=False),
    Column("exit_code", Integer),
    Column("error_message", Text),
    Column("abort_reason", String),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("completed_at", UtcDateTime),
    Column("environment", JSON, nullable=False),
    Column("user", String, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("targets", JSON, nullable=False),
    Column("total_steps", Integer, nullable=False),
    Column("completed_steps", Integer, nullable=False),
    Column("current_step_index", Integer),
    Column("progress_percentage", Float, nullable=False),
    Column("workflow_source", Text),
    # no foreign key: the original may be deleted and the rerun stays
    Column("rerun_of", String),
    Column("owner", String),
    # admission: pending executions start by priority (higher first), then age
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("admitted_at", UtcDateTime),
    Column("source", String, nullable=False, server_default=""),
    Column("labels", JSON, nullable=False, server_default="{}"),
    # the list is newest first, with or without a filter on status or user
    Index(None, "created_at"),
    Index(None, "status", "created_at"),
    Index(None, "user", "created_at"),
    Index(None, "status", "priority", "created_at"),
)

steps = Table(
    "steps",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("id", String, nullable=False, unique=True),
    Column("execution_id", String, ForeignKey("executions.id", ondelete="CASCADE"), nullable=False),
    Column("parent_id", String, ForeignKey("steps.id", ondelete="CASCADE")),
    Column("name", String, nullable=False),
    Column("kind", String, nullable=False),
    # "index" is an SQL keyword
    Column("step_index", Integer, nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String, nullable=False),
    Column("exit_code", Integer),
    Column("error_message", Text),
    Column("abort_reason", String),
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("completed_at", UtcDateTime),
    Column("estimated_duration", Float),
    Column("stop_on_error", Boolean, nullable=False),
    Column("progress", Float),
    Column("metadata", JSON, nullable=False),
    Column("target", String, nullable=False),
    Column("cpu_percent", Float),
    Column("rss_bytes", Integer),
    Index(None, "execution_id", "step_index"),
    # a foreign key's child column wants an index, or each delete of a parent scans the table
    Index(None, "parent_id"),
)

log_lines = Table(
    "log_lines",
    metadata,
    Column("execution_pk", Integer, ForeignKey("executions.pk", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    # No foreign key to steps.pk on purpose: deleting a step row would then look for its lines, and
    # with no index led by step_pk that is a scan of every line. Steps go only with their execution,
    # whose cascade removes the lines.
    Column("step_pk", Integer),
    Column("stream", String, nullable=False),
    # seconds since the epoch, UTC
    Column("ts", Float, nullable=False),
    Column("text", Text, nullable=False),
    # WITHOUT ROWID: rows clustered by (execution, seq), so a tail or a range is a few contiguous pages.
    # No index by step: a step's lines are found through log_spans (an index entry per line cost as
    # much as the line itself to insert, measured: 1M lines 2.1 s with it, 1.1 s without).
    PrimaryKeyConstraint("execution_pk", "seq"),
    sqlite_with_rowid=False,
)

#: Where each step's lines are: runs of consecutive seqs of one step (a LinesLogged event, or several
#: that followed each other), at most MAX_SPAN_LINES lines each. A few rows per thousand lines, where
#: an index on log_lines by step had one per line. Lines without a step have spans too (step_pk
#: NULL): an execution's line count is the sum of its spans, not a walk of its lines.
#: Reads rely on no span being longer (a bound falling inside a span is found by an index range on
#: first_seq): lowering it needs a migration that cuts the stored spans.
#: (the number is in storage.columns, which the reads import without SQLAlchemy)

log_spans = Table(
    "log_spans",
    metadata,
    Column("execution_pk", Integer, ForeignKey("executions.pk", ondelete="CASCADE"), nullable=False),
    Column("first_seq", Integer, nullable=False),
    Column("step_pk", Integer),
    # how many lines: first_seq .. first_seq + lines - 1
    Column("lines", Integer, nullable=False),
    PrimaryKeyConstraint("execution_pk", "first_seq"),
    # a step's spans in seq order (a step filter merges one ordered scan per step); covering
    Index(None, "execution_pk", "step_pk", "first_seq", "lines"),
    sqlite_with_rowid=False,
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", String, primary_key=True),
    Column("execution_id", String, ForeignKey("executions.id", ondelete="CASCADE"), nullable=False),
    Column("step_id", String, ForeignKey("steps.id", ondelete="CASCADE")),
    Column("name", String, nullable=False),
    Column("file_name", String, nullable=False),
    Column("file_path", String, nullable=False),
    Column("file_size", Integer, nullable=False),
    Column("mime_type", String, nullable=False),
    Column("artifact_type", String, nullable=False),
    Column("sha256", String, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("is_public", Boolean, nullable=False),
    Column("retention_days", Integer, nullable=False),
    Index(None, "execution_id", "created_at"),
    Index(None, "step_id"),
)

#: Work claimed by external workers (engine.store.queue). A claim takes the first row of
#: ix_queue_items_claim for its queue: pending, the highest priority, then the oldest (rowid order).
queue_items = Table(
    "queue_items",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("id", String, nullable=False, unique=True),
    Column("queue", String, nullable=False),
    # JSON text of any value: TEXT, as a column typed JSON has NUMERIC affinity, which would turn
    # the text of a JSON number into an SQLite number (and a big integer into a float)
    Column("payload", Text),
    Column("priority", Integer, nullable=False),
    Column("status", String, nullable=False),
    Column("worker", String),
    Column("attempt", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("claimed_at", UtcDateTime),
    Column("heartbeat_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    Column("result", Text),
    # no foreign key: the execution may be deleted and the item stays
    Column("execution_id", String),
    Column("labels", JSON, nullable=False),
    # requeue_stale: running items by age of their heartbeat
    Index(None, "status", "heartbeat_at"),
    Index(None, "execution_id"),
)

Index("ix_queue_items_claim", queue_items.c.queue, queue_items.c.status, queue_items.c.priority.desc())

#: Named counters for serials (engine.store.registry): the next value is value + 1.
counters = Table(
    "counters",
    metadata,
    Column("name", String, primary_key=True),
    Column("value", Integer, nullable=False),
    sqlite_with_rowid=False,
)

#: Runners, targets, jobs... of other surfaces (engine.store.registry). AUTOINCREMENT: a deleted
#: entry's id is never given to a new one.
registry = Table(
    "registry",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String, nullable=False),
    Column("serial", String, unique=True),
    Column("name", String, nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("kind", "name"),
    sqlite_autoincrement=True,
)

# -- OpsConductor (engine.store.opsconductor) ---------------------------------------------------------
# Its targets are registry entries of kind "target". A job's execution is an ordinary execution
# (`executions`); `ops_executions` gives it its serial, and `ops_branches` gives each of its branch
# steps one. Status, times and exit code are copied from those rows by the triggers below, in the
# transaction that changes them, so that the analytics read one narrow table through a covering
# index instead of joining 100,000 branches to their steps.

ops_jobs = Table(
    "ops_jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String, nullable=False, unique=True),
    Column("serial", String, nullable=False, unique=True),
    Column("name", String, nullable=False),
    Column("description", Text, nullable=False),
    Column("job_type", String, nullable=False),
    Column("actions", JSON, nullable=False),
    Column("target_ids", JSON, nullable=False),
    Column("scheduled_at", UtcDateTime),
    # 'scheduled' until its time comes and it is started ('started'); NULL: never scheduled
    Column("schedule_state", String),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index(None, "created_at"),
    Index(None, "schedule_state", "scheduled_at"),
    sqlite_autoincrement=True,
)

ops_executions = Table(
    "ops_executions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String, nullable=False, unique=True),
    Column("serial", String, nullable=False, unique=True),
    Column("job_id", Integer, ForeignKey("ops_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    # the execution running it (NULL until it is submitted, or when it could not be)
    Column("execution_pk", Integer, ForeignKey("executions.pk", ondelete="CASCADE")),
    Column("execution_id", String),
    # copied from the execution (triggers)
    Column("status", String, nullable=False),
    Column("started_at", UtcDateTime),
    Column("completed_at", UtcDateTime),
    Column("duration", Float),
    Column("error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("job_id", "number"),
    Index(None, "execution_pk"),
    # analytics: by time, and a job's by time (covering)
    Index(None, "created_at", "status", "duration"),
    Index(None, "job_id", "created_at", "status", "duration"),
    sqlite_autoincrement=True,
)

ops_branches = Table(
    "ops_branches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("uuid", String, nullable=False, unique=True),
    Column("serial", String, nullable=False, unique=True),
    Column("ops_execution_id", Integer, ForeignKey("ops_executions.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    # the job's id again (it never changes): a job's branches by target without a join
    Column("job_id", Integer, nullable=False),
    # no foreign key: a deleted target's history stays, with its serial and name as they were
    Column("target_id", Integer, nullable=False),
    Column("target_serial", String, nullable=False),
    Column("target_name", String, nullable=False),
    # the branch step running it (NULL until it is submitted)
    Column("step_pk", Integer),
    Column("step_id", String),
    # copied from the branch step (triggers)
    Column("status", String, nullable=False),
    Column("started_at", UtcDateTime),
    Column("completed_at", UtcDateTime),
    Column("duration", Float),
    Column("exit_code", Integer),
    Column("error", Text),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("ops_execution_id", "number"),
    Index(None, "step_pk"),
    # a target's performance and history; a job's per target (covering)
    Index(None, "target_id", "created_at", "status", "duration"),
    Index(None, "job_id", "target_id", "created_at", "status", "duration"),
    sqlite_autoincrement=True,
)

#: a target with pending or running branches cannot be deleted: found without reading its history
Index("ix_ops_branches_open", ops_branches.c.target_id, sqlite_where=ops_branches.c.status.in_(("pending", "running")))

_SECONDS_BETWEEN = "(julianday(NEW.completed_at) - julianday(NEW.started_at)) * 86400.0"
#: the triggers keeping the OpsConductor rows' copies of their execution's and branch steps' state
OPS_TRIGGERS = (
    "CREATE TRIGGER ops_execution_follows AFTER UPDATE OF status, started_at, completed_at ON executions "
    "WHEN NEW.status IS NOT OLD.status OR NEW.started_at IS NOT OLD.started_at "
    "OR NEW.completed_at IS NOT OLD.completed_at "
    "BEGIN UPDATE ops_executions SET status = NEW.status, started_at = NEW.started_at, "
    f"completed_at = NEW.completed_at, duration = {_SECONDS_BETWEEN}, "
    "error = coalesce(NEW.error_message, error) WHERE execution_pk = NEW.pk; END",
    "CREATE TRIGGER ops_branch_follows AFTER UPDATE OF status, started_at, completed_at, exit_code ON steps "
    "WHEN NEW.kind = 'branch' AND (NEW.status IS NOT OLD.status OR NEW.started_at IS NOT OLD.started_at "
    "OR NEW.completed_at IS NOT OLD.completed_at OR NEW.exit_code IS NOT OLD.exit_code) "
    "BEGIN UPDATE ops_branches SET status = NEW.status, started_at = NEW.started_at, "
    f"completed_at = NEW.completed_at, duration = {_SECONDS_BETWEEN}, exit_code = NEW.exit_code, "
    "error = NEW.error_message WHERE step_pk = NEW.pk; END",
)


def _create_ops_triggers(target: Any, connection: Any, **_kw: Any) -> None:
    for sql in OPS_TRIGGERS:
        connection.exec_driver_sql(sql)


event.listen(ops_branches, "after_create", _create_ops_triggers)


def _check_columns() -> None:
    """The tables' columns are those storage.columns lists for the reads (which run without SQLAlchemy)."""
    for table, listed in ((executions, columns.EXECUTIONS), (steps, columns.STEPS), (artifacts, columns.ARTIFACTS),
                          (queue_items, columns.QUEUE_ITEMS), (registry, columns.REGISTRY),
                          (ops_jobs, columns.OPS_JOBS), (ops_executions, columns.OPS_EXECUTIONS),
                          (ops_branches, columns.OPS_BRANCHES)):
        names = tuple(c.name for c in table.columns)
        json_names = frozenset(c.name for c in table.columns if isinstance(c.type, JSON))
        if (table.name, names, json_names) != tuple(listed):
            raise RuntimeError(f"storage/columns.py does not list the columns of {table.name} as storage/tables.py "
                               f"defines them: {names} (JSON: {sorted(json_names)})")


_check_columns()

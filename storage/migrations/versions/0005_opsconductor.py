"""OpsConductor: jobs, their executions and branches with their serials, and the triggers that copy
each execution's and branch step's state into them (storage.tables).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SECONDS_BETWEEN = "(julianday(NEW.completed_at) - julianday(NEW.started_at)) * 86400.0"
# as storage.tables.OPS_TRIGGERS (a migration keeps the text it was written with)
TRIGGERS = (
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


def upgrade() -> None:
    op.create_table(
        "ops_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(), nullable=False),
        sa.Column("serial", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("job_type", sa.String(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("target_ids", sa.JSON(), nullable=False),
        sa.Column("scheduled_at", sa.String(32), nullable=True),
        sa.Column("schedule_state", sa.String(), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ops_jobs"),
        sa.UniqueConstraint("uuid", name="uq_ops_jobs_uuid"),
        sa.UniqueConstraint("serial", name="uq_ops_jobs_serial"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ops_jobs_created_at", "ops_jobs", ["created_at"])
    op.create_index("ix_ops_jobs_schedule_state_scheduled_at", "ops_jobs", ["schedule_state", "scheduled_at"])
    op.create_table(
        "ops_executions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(), nullable=False),
        sa.Column("serial", sa.String(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("execution_pk", sa.Integer(), nullable=True),
        sa.Column("execution_id", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("started_at", sa.String(32), nullable=True),
        sa.Column("completed_at", sa.String(32), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["ops_jobs.id"], name="fk_ops_executions_job_id_ops_jobs",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["execution_pk"], ["executions.pk"],
                                name="fk_ops_executions_execution_pk_executions", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_ops_executions"),
        sa.UniqueConstraint("job_id", "number", name="uq_ops_executions_job_id_number"),
        sa.UniqueConstraint("uuid", name="uq_ops_executions_uuid"),
        sa.UniqueConstraint("serial", name="uq_ops_executions_serial"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ops_executions_execution_pk", "ops_executions", ["execution_pk"])
    op.create_index("ix_ops_executions_created_at_status_duration", "ops_executions",
                    ["created_at", "status", "duration"])
    op.create_index("ix_ops_executions_job_id_created_at_status_duration", "ops_executions",
                    ["job_id", "created_at", "status", "duration"])
    op.create_table(
        "ops_branches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(), nullable=False),
        sa.Column("serial", sa.String(), nullable=False),
        sa.Column("ops_execution_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("target_serial", sa.String(), nullable=False),
        sa.Column("target_name", sa.String(), nullable=False),
        sa.Column("step_pk", sa.Integer(), nullable=True),
        sa.Column("step_id", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("started_at", sa.String(32), nullable=True),
        sa.Column("completed_at", sa.String(32), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.ForeignKeyConstraint(["ops_execution_id"], ["ops_executions.id"],
                                name="fk_ops_branches_ops_execution_id_ops_executions", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_ops_branches"),
        sa.UniqueConstraint("ops_execution_id", "number", name="uq_ops_branches_ops_execution_id_number"),
        sa.UniqueConstraint("uuid", name="uq_ops_branches_uuid"),
        sa.UniqueConstraint("serial", name="uq_ops_branches_serial"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ops_branches_step_pk", "ops_branches", ["step_pk"])
    op.create_index("ix_ops_branches_target_id_created_at_status_duration", "ops_branches",
                    ["target_id", "created_at", "status", "duration"])
    op.create_index("ix_ops_branches_job_id_target_id_created_at_status_duration", "ops_branches",
                    ["job_id", "target_id", "created_at", "status", "duration"])
    op.create_index("ix_ops_branches_open", "ops_branches", ["target_id"],
                    sqlite_where=sa.text("status IN ('pending', 'running')"))
    for sql in TRIGGERS:
        op.execute(sql)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS ops_branch_follows")
    op.execute("DROP TRIGGER IF EXISTS ops_execution_follows")
    op.drop_table("ops_branches")
    op.drop_table("ops_executions")
    op.drop_table("ops_jobs")

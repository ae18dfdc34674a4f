"""The initial schema: executions, steps (branches included), log lines, artifacts.

Revision ID: 0001
Revises:
Create Date: 2025-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("working_directory", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("abort_reason", sa.String(), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.String(length=32), nullable=True),
        sa.Column("completed_at", sa.String(length=32), nullable=True),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("user", sa.String(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("total_steps", sa.Integer(), nullable=False),
        sa.Column("completed_steps", sa.Integer(), nullable=False),
        sa.Column("current_step_index", sa.Integer(), nullable=True),
        sa.Column("progress_percentage", sa.Float(), nullable=False),
        sa.Column("workflow_source", sa.Text(), nullable=True),
        sa.Column("rerun_of", sa.String(), nullable=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name="pk_executions"),
        sa.UniqueConstraint("id", name="uq_executions_id"),
    )
    op.create_index("ix_executions_created_at", "executions", ["created_at"])
    op.create_index("ix_executions_status_created_at", "executions", ["status", "created_at"])
    op.create_index("ix_executions_user_created_at", "executions", ["user", "created_at"])

    op.create_table(
        "steps",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("execution_id", sa.String(), nullable=False),
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("abort_reason", sa.String(), nullable=True),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.String(length=32), nullable=True),
        sa.Column("completed_at", sa.String(length=32), nullable=True),
        sa.Column("estimated_duration", sa.Float(), nullable=True),
        sa.Column("stop_on_error", sa.Boolean(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("rss_bytes", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["execution_id"], ["executions.id"], name="fk_steps_execution_id_executions", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["steps.id"], name="fk_steps_parent_id_steps", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk", name="pk_steps"),
        sa.UniqueConstraint("id", name="uq_steps_id"),
    )
    op.create_index("ix_steps_execution_id_step_index", "steps", ["execution_id", "step_index"])
    op.create_index("ix_steps_parent_id", "steps", ["parent_id"])

    op.create_table(
        "log_lines",
        sa.Column("execution_pk", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("step_pk", sa.Integer(), nullable=True),
        sa.Column("stream", sa.String(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_pk"], ["executions.pk"], name="fk_log_lines_execution_pk_executions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("execution_pk", "seq", name="pk_log_lines"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_log_lines_execution_pk_step_pk_seq", "log_lines", ["execution_pk", "step_pk", "seq"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("execution_id", sa.String(), nullable=False),
        sa.Column("step_id", sa.String(), nullable=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("file_name", sa.String(), nullable=False),
        sa.Column("file_path", sa.String(), nullable=False),
        sa.Column("file_size", sa.Integer(), nullable=False),
        sa.Column("mime_type", sa.String(), nullable=False),
        sa.Column("artifact_type", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.String(length=32), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"], ["executions.id"], name="fk_artifacts_execution_id_executions", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["step_id"], ["steps.id"], name="fk_artifacts_step_id_steps", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
    )
    op.create_index("ix_artifacts_execution_id_created_at", "artifacts", ["execution_id", "created_at"])
    op.create_index("ix_artifacts_step_id", "artifacts", ["step_id"])


def downgrade() -> None:
    op.drop_table("artifacts")
    op.drop_table("log_lines")
    op.drop_table("steps")
    op.drop_table("executions")

"""Admission: executions carry a priority, the surface that submitted them and labels (ids other
surfaces know them by); pending ones are read by status, priority, age.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("admitted_at", sa.String(32), nullable=True))
        batch.add_column(sa.Column("source", sa.String(), nullable=False, server_default=""))
        batch.add_column(sa.Column("labels", sa.JSON(), nullable=False, server_default="{}"))
    # engines before this one started every execution at once: what they left pending was admitted
    op.execute("UPDATE executions SET admitted_at = created_at")
    op.create_index("ix_executions_status_priority_created_at", "executions", ["status", "priority", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_executions_status_priority_created_at", "executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("labels")
        batch.drop_column("source")
        batch.drop_column("admitted_at")
        batch.drop_column("priority")

"""A work queue for external workers, named counters for serials, a registry of other surfaces'
runners, targets and jobs (engine.store.queue, engine.store.registry).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_items",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("worker", sa.String(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("claimed_at", sa.String(32), nullable=True),
        sa.Column("heartbeat_at", sa.String(32), nullable=True),
        sa.Column("finished_at", sa.String(32), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("execution_id", sa.String(), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name="pk_queue_items"),
        sa.UniqueConstraint("id", name="uq_queue_items_id"),
    )
    op.create_index("ix_queue_items_claim", "queue_items", ["queue", "status", sa.text("priority DESC")])
    op.create_index("ix_queue_items_status_heartbeat_at", "queue_items", ["status", "heartbeat_at"])
    op.create_index("ix_queue_items_execution_id", "queue_items", ["execution_id"])
    op.create_table(
        "counters",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_counters"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "registry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("serial", sa.String(), nullable=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registry"),
        sa.UniqueConstraint("kind", "name", name="uq_registry_kind_name"),
        sa.UniqueConstraint("serial", name="uq_registry_serial"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("registry")
    op.drop_table("counters")
    op.drop_index("ix_queue_items_execution_id", "queue_items")
    op.drop_index("ix_queue_items_status_heartbeat_at", "queue_items")
    op.drop_index("ix_queue_items_claim", "queue_items")
    op.drop_table("queue_items")

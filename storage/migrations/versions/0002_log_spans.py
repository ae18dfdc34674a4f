"""Log lines by step through spans: `log_spans` replaces the index (execution_pk, step_pk, seq).

An index entry per line cost about as much to insert as the line itself; a span row covers a run of
consecutive lines of one step (see storage/tables.py). Existing lines get their spans here.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: as storage.tables.MAX_SPAN_LINES when this was written (a migration does not follow later changes)
MAX_SPAN_LINES = 10_000


def upgrade() -> None:
    op.create_table(
        "log_spans",
        sa.Column("execution_pk", sa.Integer(), nullable=False),
        sa.Column("first_seq", sa.Integer(), nullable=False),
        sa.Column("step_pk", sa.Integer(), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_pk"], ["executions.pk"], name="fk_log_spans_execution_pk_executions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("execution_pk", "first_seq", name="pk_log_spans"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_log_spans_execution_pk_step_pk_first_seq_lines", "log_spans",
                    ["execution_pk", "step_pk", "first_seq", "lines"])
    # runs of consecutive seqs of one step, or of no step ("islands": seq minus the line's rank in its
    # step is the same along a run), cut into pieces of at most MAX_SPAN_LINES; the old index gives
    # each step's lines in seq order
    op.execute(
        "INSERT INTO log_spans (execution_pk, first_seq, step_pk, lines) "
        "WITH runs AS ("
        "  SELECT execution_pk, step_pk, seq,"
        "         seq - row_number() OVER (PARTITION BY execution_pk, step_pk ORDER BY seq) AS island"
        "  FROM log_lines"
        "), pieces AS ("
        "  SELECT execution_pk, step_pk, seq, island,"
        f"        (row_number() OVER (PARTITION BY execution_pk, step_pk, island ORDER BY seq) - 1) / {MAX_SPAN_LINES}"
        "         AS piece"
        "  FROM runs"
        ") "
        "SELECT execution_pk, min(seq), step_pk, count(*) FROM pieces GROUP BY execution_pk, step_pk, island, piece"
    )
    op.drop_index("ix_log_lines_execution_pk_step_pk_seq", table_name="log_lines")


def downgrade() -> None:
    op.create_index("ix_log_lines_execution_pk_step_pk_seq", "log_lines", ["execution_pk", "step_pk", "seq"])
    op.drop_index("ix_log_spans_execution_pk_step_pk_first_seq_lines", table_name="log_spans")
    op.drop_table("log_spans")

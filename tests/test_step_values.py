"""The step rows the write path sends under SQLAlchemy (storage.rows.step_values) are the ones
SQLAlchemy would have sent: same columns, same text for datetimes and JSON, same 0/1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from engine.model import AbortReason, Step, StepKind, StepStatus
from storage.rows import STEP_WRITE_COLUMNS, step_row, step_values
from storage.tables import steps

_DIALECT = sqlite_dialect()


def _as_sqlalchemy_binds(step: Step) -> tuple[object, ...]:
    row = step_row(step)
    out = []
    for name in STEP_WRITE_COLUMNS:
        processor = steps.c[name].type._cached_bind_processor(_DIALECT)
        out.append(row[name] if processor is None else processor(row[name]))
    return tuple(out)


def test_the_write_columns_are_every_column_of_steps_but_its_key() -> None:
    assert set(STEP_WRITE_COLUMNS) == {c.name for c in steps.columns} - {"pk"}


def test_step_values_are_what_sqlalchemy_binds_for_a_bare_and_a_full_step() -> None:
    at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    bare = Step(id="s1", execution_id="e1", name="build", kind=StepKind.MARKER, created_at=at)
    full = Step(
        id="s2", execution_id="e1", name="tést \udcff", kind=StepKind.WORKFLOW, parent_id="s1", index=7,
        description="d", status=StepStatus.FAILED, exit_code=3, error_message="boom",
        abort_reason=AbortReason.TIMEOUT, created_at=at.replace(tzinfo=None),
        started_at=at.astimezone(timezone(timedelta(hours=2))), completed_at=at + timedelta(seconds=2),
        estimated_duration=1.5, stop_on_error=True, progress=42.0,
        metadata={"k": "v", "n": [1, 2], "é": "\udcff"}, target="local", cpu_percent=3.5, rss_bytes=1024,
    )
    for step in (bare, full):
        assert step_values(step) == _as_sqlalchemy_binds(step)

"""The step rows the write path sends under SQLAlchemy (storage.rows.STEPS.values, the step upsert of
storage.writes) hold what SQLAlchemy would have sent: same columns, same text for datetimes, same
0/1, the same JSON (as text it may be spaced differently), and they are stored and read back whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from engine.events import ExecutionCreated, StepAdded, StepFinished
from engine.model import AbortReason, Execution, ExecutionKind, Step, StepKind, StepStatus
from storage import SqliteStore
from storage.rows import STEPS, step_row
from storage.tables import steps
from storage.writes import STEP_UPSERT

_DIALECT = sqlite_dialect()
AT = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _as_sqlalchemy_binds(step: Step) -> list[object]:
    row = step_row(step)
    out = []
    for name in STEPS.columns:
        processor = steps.c[name].type._cached_bind_processor(_DIALECT)
        out.append(row[name] if processor is None else processor(row[name]))
    return out


def _full_step(execution_id: str, parent_id: str | None) -> Step:
    return Step(
        id="s2", execution_id=execution_id, name="tést \udcff", kind=StepKind.MARKER, parent_id=parent_id,
        index=7, description="d", status=StepStatus.FAILED, exit_code=3, error_message="boom",
        abort_reason=AbortReason.TIMEOUT, created_at=AT.replace(tzinfo=None),
        started_at=AT.astimezone(timezone(timedelta(hours=2))), completed_at=AT + timedelta(seconds=2),
        estimated_duration=1.5, stop_on_error=True, progress=42.0,
        metadata={"k": "v", "n": [1, 2], "é": "\udcff"}, target="local", cpu_percent=3.5, rss_bytes=1024,
    )


def test_the_step_upsert_takes_every_column_of_steps_but_its_key() -> None:
    assert set(STEPS.columns) == {c.name for c in steps.columns} - {"pk"}
    assert STEP_UPSERT.count("?") == len(STEPS.columns)


def test_step_values_are_what_sqlalchemy_binds() -> None:
    bare = Step(id="s1", execution_id="e1", name="build", kind=StepKind.MARKER, created_at=AT)
    for step in (bare, _full_step("e1", "s1")):
        ours, theirs = list(STEPS.values(step)), _as_sqlalchemy_binds(step)
        at = STEPS.columns.index("metadata")
        assert json.loads(ours.pop(at)) == json.loads(theirs.pop(at))
        assert ours == theirs


async def test_a_marker_step_added_and_failed_in_one_batch_is_stored_as_it_ended(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "stepflow.db")
    await store.open()
    try:
        ex = Execution(id="e1", name="markers", kind=ExecutionKind.COMMAND, command="x", working_directory="/",
                       created_at=AT)
        parent = Step(id="s1", execution_id="e1", name="run", kind=StepKind.WORKFLOW, created_at=AT)
        ended = _full_step("e1", "s1")
        started = Step(id="s2", execution_id="e1", name=ended.name, kind=StepKind.MARKER, parent_id="s1",
                       index=7, status=StepStatus.RUNNING, created_at=ended.created_at,
                       started_at=ended.started_at, metadata={"k": "v"})
        assert await store.apply([ExecutionCreated(ex, (parent,)), StepAdded(started), StepFinished(ended)]) == {}
        stored = {s.id: s for s in await store.get_steps("e1")}["s2"]
        assert stored.status is StepStatus.FAILED and stored.error_message == "boom"
        assert stored.completed_at == AT + timedelta(seconds=2) and stored.parent_id == "s1"
        assert stored.metadata == {"k": "v", "n": [1, 2], "é": "\ufffd"} and stored.stop_on_error is True
    finally:
        await store.close()

"""`api_compat.monitor.wire` (domain -> API dict) and `api_compat.monitor.wire_decode` (API dict ->
domain) are inverses: every field the API carries survives the trip through JSON text, as a remote
client receives it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from api_compat.monitor.envelope import dumps
from api_compat.monitor.wire import artifact_dict, execution_dict, line_dict, step_dict
from api_compat.monitor.wire_decode import (
    artifact_from_dict,
    execution_from_dict,
    line_from_dict,
    parse_time,
    step_from_dict,
)
from engine.model import (
    AbortReason,
    Artifact,
    ArtifactType,
    Execution,
    ExecutionKind,
    ExecutionStatus,
    LogLine,
    Step,
    StepKind,
    StepStatus,
    Stream,
    new_id,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def over_the_wire(d: dict) -> dict:
    """As the server writes it and a client reads it."""
    return json.loads(dumps(d))


def test_an_execution_with_every_field_set_round_trips() -> None:
    ex = Execution(
        id=new_id(),
        name="deploy ünïcode",
        kind=ExecutionKind.WORKFLOW,
        command="/srv/flows/deploy.yml",
        working_directory="/srv",
        status=ExecutionStatus.FAILED,
        exit_code=2,
        error_message="step test failed",
        abort_reason=AbortReason.STOP_ON_ERROR,
        created_at=T0,
        started_at=T0 + timedelta(seconds=1),
        completed_at=T0 + timedelta(seconds=5, microseconds=1),
        environment={"A": "1", "TOKEN": "***"},
        user="ana",
        tags=["prod", "nightly"],
        metadata={"markers": "strict", "nested": {"n": [1, 2.5, None]}},
        targets=["local", "web1"],
        total_steps=3,
        completed_steps=1,
        current_step_index=2,
        progress_percentage=33.3,
        rerun_of=new_id(),
    )
    assert execution_from_dict(over_the_wire(execution_dict(ex))) == ex


def test_a_fresh_execution_round_trips() -> None:
    ex = Execution(id=new_id(), name="", created_at=T0)
    assert execution_from_dict(over_the_wire(execution_dict(ex))) == ex


def test_fields_that_stay_on_the_server_come_back_empty() -> None:
    ex = Execution(id=new_id(), name="x", created_at=T0, workflow_source="name: x\n", owner="host:1:2.0")
    back = execution_from_dict(over_the_wire(execution_dict(ex)))
    assert back.workflow_source is None and back.owner is None
    assert back == Execution(id=ex.id, name="x", created_at=T0)


def test_steps_of_every_kind_round_trip() -> None:
    execution_id = new_id()
    branch = Step(
        id=new_id(),
        execution_id=execution_id,
        name="web1",
        kind=StepKind.BRANCH,
        target="web1",
        created_at=T0,
    )
    workflow = Step(
        id=new_id(),
        execution_id=execution_id,
        name="test",
        kind=StepKind.WORKFLOW,
        parent_id=branch.id,
        index=1,
        description="runs pytest",
        status=StepStatus.CANCELLED,
        exit_code=-15,
        error_message="cancelled",
        abort_reason=AbortReason.USER,
        created_at=T0,
        started_at=T0 + timedelta(seconds=2),
        completed_at=T0 + timedelta(seconds=3),
        estimated_duration=12.5,
        stop_on_error=True,
        progress=40.0,
        metadata={"retries": 1, "needs": ["a"]},
        target="web1",
        cpu_percent=97.5,
        rss_bytes=123_456_789,
    )
    marker = Step(
        id=new_id(),
        execution_id=execution_id,
        name="collect",
        kind=StepKind.MARKER,
        parent_id=workflow.id,
        index=2,
        status=StepStatus.RUNNING,
        created_at=T0,
        started_at=T0,
    )
    for step in (branch, workflow, marker):
        assert step_from_dict(over_the_wire(step_dict(step))) == step
        # a step dict without its execution id (the reference server's) takes the one given
        bare = over_the_wire(step_dict(step))
        del bare["execution_id"]
        assert step_from_dict(bare, execution_id) == step


def test_an_artifact_round_trips() -> None:
    art = Artifact(
        id=new_id(),
        execution_id=new_id(),
        step_id=new_id(),
        name="junit",
        file_name="junit.xml",
        file_path="/data/artifacts/x/junit.xml",
        file_size=2**40,
        mime_type="application/xml",
        artifact_type=ArtifactType.DOCUMENT,
        sha256="0f" * 32,
        description="test report",
        created_at=T0,
        tags=["tests"],
        is_public=False,
        retention_days=7,
    )
    assert artifact_from_dict(over_the_wire(artifact_dict(art))) == art


def test_log_lines_of_every_stream_round_trip() -> None:
    execution_id = new_id()
    lines = [
        LogLine(execution_id, new_id(), 0, Stream.STDOUT, T0, "\x1b[32mok\x1b[0m\ttab ✓"),
        LogLine(execution_id, new_id(), 1, Stream.STDERR, T0 + timedelta(microseconds=1), "warn"),
        LogLine(execution_id, None, 2, Stream.SYSTEM, T0, ""),
    ]
    for line in lines:
        assert line_from_dict(over_the_wire(line_dict(line)), execution_id) == line
        # without `stream` (the reference server's log entries) the level tells it
        bare = over_the_wire(line_dict(line))
        del bare["stream"]
        assert line_from_dict(bare, execution_id) == line


def test_times_come_back_in_utc_whatever_zone_they_were_written_in() -> None:
    plus2 = timezone(timedelta(hours=2))
    local = datetime(2025, 3, 1, 14, 0, 0, 999999, tzinfo=plus2)
    ex = Execution(id=new_id(), name="x", created_at=local)
    back = execution_from_dict(over_the_wire(execution_dict(ex)))
    assert back.created_at == local and back.created_at.tzinfo == UTC
    assert parse_time("2025-03-01T12:00:00") == datetime(2025, 3, 1, 12, tzinfo=UTC)
    assert parse_time(None) is None and parse_time("") is None


def test_unknown_enum_values_and_missing_fields_take_the_defaults() -> None:
    ex = execution_from_dict({"id": "e1", "status": "exploded", "kind": "cron", "abort_reason": "meteor"})
    assert (ex.status, ex.kind, ex.abort_reason, ex.name, ex.tags) == (
        ExecutionStatus.PENDING,
        ExecutionKind.COMMAND,
        None,
        "",
        [],
    )
    step = step_from_dict({"id": "s1", "status": "??"}, "e1")
    assert (step.execution_id, step.status, step.kind, step.target) == (
        "e1",
        StepStatus.PENDING,
        StepKind.MARKER,
        "local",
    )
    art = artifact_from_dict({"id": "a1", "artifact_type": "hologram"}, "e1")
    assert (art.execution_id, art.artifact_type, art.mime_type) == (
        "e1",
        ArtifactType.OTHER,
        "application/octet-stream",
    )

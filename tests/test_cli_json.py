"""What `stepflow ls --json` / `show --json` print for one execution, step and artifact: every field,
in order, with its JSON value (the CLI's own format, `stepflow_tui.cli.json_views`; the API's is
`api_compat.monitor.wire`). A changed field here is a change scripts reading the CLI would notice."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from engine.model import (
    AbortReason,
    Artifact,
    ArtifactType,
    Execution,
    ExecutionKind,
    ExecutionStatus,
    Step,
    StepKind,
    StepStatus,
)
from stepflow_tui.cli.json_views import artifact_json, execution_json, step_json

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def printed(d: dict) -> list[tuple[str, object]]:
    """As the CLI prints it and a script reads it back: the fields in order."""
    return list(json.loads(json.dumps(d, indent=2)).items())


def test_an_execution_prints_every_field_in_order() -> None:
    ex = Execution(
        id="ex1", name="deploy", kind=ExecutionKind.WORKFLOW, command="/srv/deploy.yml",
        working_directory="/srv", status=ExecutionStatus.FAILED, exit_code=2, error_message="step test failed",
        abort_reason=AbortReason.STOP_ON_ERROR, created_at=T0, started_at=T0 + timedelta(seconds=1),
        completed_at=T0 + timedelta(seconds=5, microseconds=1234), environment={"A": "1"}, user="ana",
        tags=["prod"], metadata={"markers": "strict"}, targets=["local", "web1"], total_steps=3,
        completed_steps=1, current_step_index=2, progress_percentage=33.3333333, rerun_of="ex0",
        # not printed: the queue's and the server's own
        priority=5, source="cli", labels={"executr.job": "j1"}, owner="host:1:2.0", workflow_source="x",
    )
    assert printed(execution_json(ex)) == [
        ("id", "ex1"), ("name", "deploy"), ("command", "/srv/deploy.yml"), ("working_directory", "/srv"),
        ("status", "failed"), ("exit_code", 2), ("error_message", "step test failed"),
        ("created_at", "2025-03-01T12:00:00.123456Z"), ("started_at", "2025-03-01T12:00:01.123456Z"),
        ("completed_at", "2025-03-01T12:00:05.124690Z"), ("environment", {"A": "1"}), ("user", "ana"),
        ("tags", ["prod"]), ("total_steps", 3), ("completed_steps", 1), ("current_step_index", 2),
        ("duration_seconds", 4.001), ("progress_percentage", 33.3333333), ("metadata", {"markers": "strict"}),
        ("kind", "workflow"), ("targets", ["local", "web1"]), ("abort_reason", "stop_on_error"),
        ("rerun_of", "ex0"),
    ]


def test_a_fresh_execution_prints_nulls_and_utc_times() -> None:
    ex = Execution(id="x", name="", created_at=datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=2))))
    d = dict(printed(execution_json(ex)))
    assert d["created_at"] == "2024-12-31T22:00:00Z"
    assert d["status"] == "pending" and d["kind"] == "command"
    assert d["started_at"] is d["duration_seconds"] is d["abort_reason"] is d["current_step_index"] is None
    assert d["tags"] == [] and d["environment"] == {} and d["progress_percentage"] == 0.0


def test_a_step_prints_every_field_in_order() -> None:
    step = Step(
        id="st1", execution_id="ex1", name="test", kind=StepKind.WORKFLOW, parent_id="br1", index=1,
        description="runs pytest", status=StepStatus.FAILED, exit_code=1, error_message="boom",
        abort_reason=AbortReason.USER, created_at=T0, started_at=T0,
        completed_at=T0 + timedelta(seconds=2.00049), estimated_duration=12.5, stop_on_error=True,
        progress=40.1234, metadata={"retries": 1}, target="web1", cpu_percent=97.5, rss_bytes=123,
    )
    assert printed(step_json(step)) == [
        ("id", "st1"), ("execution_id", "ex1"), ("name", "test"), ("description", "runs pytest"), ("index", 1),
        ("status", "failed"), ("exit_code", 1), ("error_message", "boom"),
        ("created_at", "2025-03-01T12:00:00.123456Z"), ("started_at", "2025-03-01T12:00:00.123456Z"),
        ("completed_at", "2025-03-01T12:00:02.123946Z"), ("estimated_duration", 12.5), ("stop_on_error", True),
        ("duration_seconds", 2.0), ("metadata", {"retries": 1}), ("parent_id", "br1"), ("kind", "workflow"),
        ("target", "web1"), ("progress", 40.1234), ("abort_reason", "user"), ("cpu_percent", 97.5),
        ("rss_bytes", 123),
    ]


def test_an_artifact_prints_every_field_in_order() -> None:
    artifact = Artifact(
        id="ar1", execution_id="ex1", step_id="st1", name="report", file_name="report.html",
        file_path="/data/artifacts/ar1", file_size=2048, mime_type="text/html",
        artifact_type=ArtifactType.DOCUMENT, sha256="ab" * 32, description="the report", created_at=T0,
        tags=["t"], is_public=False, retention_days=7,
    )
    assert printed(artifact_json(artifact)) == [
        ("id", "ar1"), ("execution_id", "ex1"), ("step_id", "st1"), ("name", "report"),
        ("description", "the report"), ("file_path", "/data/artifacts/ar1"), ("file_name", "report.html"),
        ("file_size", 2048), ("mime_type", "text/html"), ("artifact_type", "document"),
        ("created_at", "2025-03-01T12:00:00.123456Z"), ("tags", ["t"]), ("is_public", False),
        ("retention_days", 7), ("download_url", "/api/artifacts/ar1/download"), ("sha256", "ab" * 32),
    ]

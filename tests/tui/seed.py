"""Fixed data for TUI tests and snapshots: ids, timestamps and texts never change."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from engine.events import (
    ArtifactAdded,
    Event,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionStarted,
    LinesLogged,
    StepAdded,
    StepFinished,
    StepStarted,
)
from engine.model import (
    Artifact,
    ArtifactType,
    Execution,
    ExecutionKind,
    ExecutionStatus,
    Step,
    StepKind,
    StepStatus,
    Stream,
)

T0 = datetime(2025, 3, 14, 9, 0, 0, tzinfo=UTC)
#: "now" for the snapshot clock: a little after the last execution started
NOW = T0 + timedelta(minutes=30)

README_TEXT = b"# Build report\n\nAll **12** tests passed.\n\n```python\nprint('ok')\n```\n"


def _id(n: int) -> str:
    # distinct first characters: the list and the titles show the short id
    return f"{n:08x}-0000-4000-8000-{n:012d}"


def _finished(ex: Execution, status: ExecutionStatus, start: datetime, seconds: float, **kw) -> Execution:
    return dataclasses.replace(ex, status=status, started_at=start, completed_at=start + timedelta(seconds=seconds), **kw)


def build_events(*, extra_lines: int = 0) -> list[Event]:
    """Five executions: completed, failed, cancelled, pending and one running with a tree."""
    events: list[Event] = []
    names = [
        ("nightly-backup", ExecutionStatus.COMPLETED, 0, 42.5, {"exit_code": 0}),
        ("deploy-web", ExecutionStatus.FAILED, 5, 12.0, {"exit_code": 2, "error_message": "step 'migrate' failed"}),
        ("long-import", ExecutionStatus.CANCELLED, 10, 300.0, {"error_message": "cancelled by user"}),
    ]
    for n, (name, status, minute, seconds, kw) in enumerate(names, start=1):
        start = T0 + timedelta(minutes=minute)
        ex = Execution(id=_id(n), name=name, command=f"./{name}.sh", created_at=start, targets=["local"],
                       total_steps=2, completed_steps=2 if status is ExecutionStatus.COMPLETED else 1,
                       progress_percentage=100.0 if status is ExecutionStatus.COMPLETED else 50.0)
        branch = Step(id=_id(100 + n), execution_id=ex.id, name="local", kind=StepKind.BRANCH, created_at=start)
        events.append(ExecutionCreated(ex, (branch,)))
        events.append(ExecutionStarted(dataclasses.replace(ex, status=ExecutionStatus.RUNNING, started_at=start)))
        events.append(ExecutionFinished(_finished(ex, status, start, seconds, **kw)))
    # pending
    pend = Execution(id=_id(4), name="queued-report", command="./report.sh", created_at=T0 + timedelta(minutes=20),
                     targets=["local"])
    events.append(ExecutionCreated(pend, ()))
    # running workflow with a tree and logs
    start = T0 + timedelta(minutes=25)
    ex = Execution(id=_id(5), name="build-and-test", kind=ExecutionKind.WORKFLOW,
                   command="sample_workflows/build.yml", created_at=start, targets=["local", "web1"],
                   total_steps=4, completed_steps=1, progress_percentage=25.0)
    b_local = Step(id=_id(501), execution_id=ex.id, name="local", kind=StepKind.BRANCH, index=0,
                   created_at=start)
    b_web = Step(id=_id(502), execution_id=ex.id, name="web1", kind=StepKind.BRANCH, index=1, target="web1",
                 created_at=start)
    setup = Step(id=_id(503), execution_id=ex.id, name="setup", kind=StepKind.WORKFLOW, parent_id=b_local.id,
                 index=2, created_at=start)
    test = Step(id=_id(504), execution_id=ex.id, name="test", kind=StepKind.WORKFLOW, parent_id=b_local.id,
                index=3, created_at=start)
    deploy = Step(id=_id(505), execution_id=ex.id, name="deploy", kind=StepKind.WORKFLOW, parent_id=b_web.id,
                  index=4, target="web1", created_at=start)
    events.append(ExecutionCreated(ex, (b_local, b_web, setup, test, deploy)))
    running = dataclasses.replace(ex, status=ExecutionStatus.RUNNING, started_at=start)
    events.append(ExecutionStarted(running))
    events.append(StepStarted(dataclasses.replace(b_local, status=StepStatus.RUNNING, started_at=start)))
    events.append(StepStarted(dataclasses.replace(setup, status=StepStatus.RUNNING, started_at=start)))
    seq = 0

    def log(step_id: str, lines: list[str], stream: Stream = Stream.STDOUT, at: datetime = start) -> None:
        nonlocal seq
        events.append(LinesLogged(ex.id, step_id, stream, seq, at, tuple(lines)))
        seq += len(lines)

    log(setup.id, ["installing dependencies", "\x1b[32mok\x1b[0m 14 packages"])
    events.append(StepFinished(dataclasses.replace(setup, status=StepStatus.COMPLETED, started_at=start,
                                                   completed_at=start + timedelta(seconds=8))))
    t1 = start + timedelta(seconds=8)
    events.append(StepStarted(dataclasses.replace(test, status=StepStatus.RUNNING, started_at=t1)))
    unit = Step(id=_id(506), execution_id=ex.id, name="unit", kind=StepKind.MARKER, parent_id=test.id, index=5,
                status=StepStatus.RUNNING, started_at=t1, created_at=t1, progress=60.0, cpu_percent=87.0,
                rss_bytes=123 * 1024 * 1024)
    events.append(StepAdded(unit))
    log(unit.id, ["STEP_START:unit", "collected 120 items", "test_api.py ........ [ 40%]",
                  "test_db.py ...F [ 60%]"], at=t1)
    log(unit.id, ["WARNING: database slow to answer"], Stream.STDERR, at=t1)
    log(unit.id, ["STEP_PROGRESS:60"], at=t1)
    for i in range(extra_lines):
        log(unit.id, [f"progress line {i}"], at=t1)
    lint = Step(id=_id(507), execution_id=ex.id, name="lint", kind=StepKind.MARKER, parent_id=test.id, index=6,
                status=StepStatus.FAILED, started_at=t1, completed_at=t1 + timedelta(seconds=3), created_at=t1,
                error_message="3 style errors")
    events.append(StepAdded(lint))
    events.append(StepFinished(lint))
    events.append(ArtifactAdded(Artifact(
        id=_id(900), execution_id=ex.id, step_id=setup.id, name="report.md", file_name="report.md",
        file_path="/data/artifacts/report.md", file_size=len(README_TEXT), mime_type="text/markdown",
        artifact_type=ArtifactType.DOCUMENT, sha256="0" * 64, created_at=t1)))
    events.append(ArtifactAdded(Artifact(
        id=_id(901), execution_id=ex.id, step_id=unit.id, name="coverage.bin", file_name="coverage.bin",
        file_path="/data/artifacts/coverage.bin", file_size=40960, mime_type="application/octet-stream",
        artifact_type=ArtifactType.DATA, sha256="1" * 64, created_at=t1)))
    return events


RUNNING_ID = _id(5)
FAILED_ID = _id(2)
ARTIFACT_BYTES = {_id(900): README_TEXT, _id(901): b"\x00\x01\x02binary"}

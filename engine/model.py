"""Domain types of the engine: executions, steps (branches are steps of kind BRANCH), log lines, artifacts.

Statuses are enums whose values are the stored strings. Every status change goes through
`engine.execution.transitions`, which holds the one table of allowed transitions per status enum.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    # imported here: `uuid` (with `platform`) is a tenth of what `stepflow ls` imports, and reads make
    # no ids; a module already imported costs a dict lookup
    import uuid

    return str(uuid.uuid4())


class ExecutionStatus(enum.StrEnum):
    #: created, not yet started
    PENDING = "pending"
    #: at least one branch is running
    RUNNING = "running"
    #: every branch finished successfully
    COMPLETED = "completed"
    #: a branch failed, a command could not start, or the engine was lost
    FAILED = "failed"
    #: stopped on request (user or shutdown)
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_EXECUTION


TERMINAL_EXECUTION = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)


class StepStatus(enum.StrEnum):
    #: waiting for its needs or for a free slot
    PENDING = "pending"
    #: its command runs (or, for a marker step, it is open)
    RUNNING = "running"
    #: finished successfully
    COMPLETED = "completed"
    #: finished with an error (non-zero exit, STEP_ERROR, timeout, spawn error)
    FAILED = "failed"
    #: never ran because a step it needs failed, or the execution stopped first
    SKIPPED = "skipped"
    #: was running when the execution was cancelled
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STEP


TERMINAL_STEP = frozenset(
    {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)


class AbortReason(enum.StrEnum):
    """Why something ended early; kept beside the status."""

    #: a person asked (CLI Ctrl-C, TUI, API)
    USER = "user"
    #: a step's timeout elapsed
    TIMEOUT = "timeout"
    #: the engine was shutting down
    SHUTDOWN = "shutdown"
    #: the engine that ran it died (found "running" at start)
    ENGINE_LOST = "engine lost"
    #: a step with stop_on_error reported STEP_ERROR
    STOP_ON_ERROR = "stop_on_error"
    #: the command could not be started
    SPAWN_ERROR = "spawn error"


class StepKind(enum.StrEnum):
    #: an execution's run on one target; the root of that target's tree
    BRANCH = "branch"
    #: a step declared in a workflow file
    WORKFLOW = "workflow"
    #: a step announced by a marker in a command's output
    MARKER = "marker"


class ExecutionKind(enum.StrEnum):
    WORKFLOW = "workflow"
    COMMAND = "command"
    #: a job of the executr queue: a worker process claims it, runs it and reports (engine.jobs)
    JOB = "job"


class Stream(enum.StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"
    #: lines the engine itself writes into the log (spawn errors, timeouts)
    SYSTEM = "system"


class ArtifactType(enum.StrEnum):
    DOCUMENT = "document"
    IMAGE = "image"
    DATA = "data"
    LOG = "log"
    ARCHIVE = "archive"
    OTHER = "other"


@dataclass(slots=True)
class Execution:
    id: str
    name: str
    kind: ExecutionKind = ExecutionKind.COMMAND
    #: the command line (for a command) or the workflow's file path (for a workflow)
    command: str = ""
    working_directory: str = ""
    status: ExecutionStatus = ExecutionStatus.PENDING
    exit_code: int | None = None
    error_message: str | None = None
    abort_reason: AbortReason | None = None
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    #: environment given to the commands, secret values already masked
    environment: dict[str, str] = field(default_factory=dict)
    user: str = ""
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)
    total_steps: int = 0
    completed_steps: int = 0
    current_step_index: int | None = None
    progress_percentage: float = 0.0
    #: the workflow source (YAML text) so a rerun does not depend on the file still being there
    workflow_source: str | None = None
    #: id of the execution this one reruns, if any
    rerun_of: str | None = None
    #: the engine process running it ("host:pid:start-time"), to tell a live engine from a dead one
    owner: str | None = None
    #: admission order: a pending execution with a higher priority starts first, then the oldest
    priority: int = 0
    #: when an engine took it from the queue to start it (None: still queued). A pending execution
    #: that was admitted may have started processes: a dead engine's is lost, not started again.
    admitted_at: datetime | None = None
    #: the surface that submitted it ("cli", "tui", "monitor", "executr", ...)
    source: str = ""
    #: ids other surfaces know it by (e.g. {"executr.job": "…"}), searchable
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.completed_at or utcnow()
        return (end - self.started_at).total_seconds()

    def snapshot(self) -> Execution:
        copy = _shallow_copy(self)
        copy.environment = dict(self.environment)
        copy.tags = list(self.tags)
        copy.metadata = dict(self.metadata)
        copy.targets = list(self.targets)
        copy.labels = dict(self.labels)
        return copy


#: a step's metadata key: the execution (a rerun's original) in which a skipped step completed
COMPLETED_IN = "completed_in"


@dataclass(slots=True)
class Step:
    id: str
    execution_id: str
    name: str
    kind: StepKind
    #: None for a branch; a branch's or another step's id otherwise
    parent_id: str | None = None
    #: order of creation within the execution (0, 1, 2 ...)
    index: int = 0
    description: str = ""
    status: StepStatus = StepStatus.PENDING
    exit_code: int | None = None
    error_message: str | None = None
    abort_reason: AbortReason | None = None
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    estimated_duration: float | None = None
    stop_on_error: bool = False
    #: 0..100 when known
    progress: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the target name this step runs on (its branch's)
    target: str = "local"
    cpu_percent: float | None = None
    rss_bytes: int | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.completed_at or utcnow()
        return (end - self.started_at).total_seconds()

    def snapshot(self) -> Step:
        copy = Step(*_step_values(self))  # _shallow_copy, without its look-up: one for each event
        copy.metadata = dict(self.metadata)
        return copy


@dataclass(slots=True, frozen=True)
class LogLine:
    execution_id: str
    step_id: str | None
    seq: int
    stream: Stream
    timestamp: datetime
    text: str


@dataclass(slots=True)
class Artifact:
    id: str
    execution_id: str
    step_id: str | None
    name: str
    file_name: str
    #: absolute path of the copy inside the artifact store
    file_path: str
    file_size: int
    mime_type: str
    artifact_type: ArtifactType
    sha256: str
    description: str = ""
    created_at: datetime = field(default_factory=utcnow)
    tags: list[str] = field(default_factory=list)
    is_public: bool = True
    retention_days: int = 30

    @property
    def download_url(self) -> str:
        return f"/api/artifacts/{self.id}/download"


@dataclass(slots=True, frozen=True)
class ExecutionFilter:
    status: ExecutionStatus | None = None
    user: str | None = None
    #: case-insensitive substring of name or command
    text: str | None = None
    limit: int = 100
    offset: int = 0


@dataclass(slots=True, frozen=True)
class ArtifactFilter:
    execution_id: str | None = None
    step_id: str | None = None
    artifact_type: ArtifactType | None = None
    limit: int = 100
    offset: int = 0


def _shallow_copy(obj: _Copied) -> _Copied:
    """A field-by-field copy: the engine snapshots a step or an execution for every event it
    publishes, and `dataclasses.replace` cost three times this."""
    return type(obj)(*_FIELD_VALUES[type(obj)](obj))


_Copied = TypeVar("_Copied", "Execution", "Step")
#: a class's field values in the order of its __init__'s parameters (all fields are init fields)
_FIELD_VALUES: dict[type, operator.attrgetter[Any]] = {
    cls: operator.attrgetter(*(f.name for f in dataclasses.fields(cls))) for cls in (Execution, Step)
}
_step_values = _FIELD_VALUES[Step]

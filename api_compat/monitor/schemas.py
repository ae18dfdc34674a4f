"""StepFlow Monitor request and response models.

Requests are validated with these models (strict types). An unknown field in a JSON body is
ignored and named in the answer's `warnings` (`errors.read_json`): a client written for another
version of the API, or the reference's web UI, still gets its request done; a form upload refuses it. Responses are built
as plain dicts (`api_compat.monitor.wire`) for speed; the response models document them in the OpenAPI document,
and the tests check real responses against them, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from engine.model import ArtifactType, ExecutionStatus

T = TypeVar("T")

#: a JSON body: unknown fields are left out before validation and reported as warnings
_BODY = ConfigDict(extra="ignore", strict=True)
_OUT = ConfigDict(extra="forbid")

#: SQLite's INTEGER range: a query number beyond it is a 400, not an OverflowError in the store
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


# -- envelopes ------------------------------------------------------------------------------------
class Envelope(BaseModel, Generic[T]):
    model_config = _OUT
    success: bool
    data: T | None
    error: str | None
    timestamp: str
    #: ours: present only when something in the request was ignored (an unknown field)
    warnings: list[str] = Field(default_factory=list, min_length=1,
                                description="ours: what in the request was ignored (present only then)")


class ErrorEnvelope(BaseModel):
    model_config = _OUT
    success: Literal[False]
    data: None
    error: str
    timestamp: str


# -- requests -------------------------------------------------------------------------------------
#: what the engine refuses at submit, said in the document too (the engine checks it: its messages
#: name the problem better than a pattern does)
_NO_NUL: JsonDict = {"pattern": "^[^\\u0000]*$"}
_SOME_TEXT: JsonDict = {"pattern": "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"}
_ENV: JsonDict = {"propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}, "additionalProperties": {"type": "string", **_NO_NUL}}


class CreateExecutionBody(BaseModel):
    model_config = _BODY
    name: str | None = None
    command: str = Field(min_length=1, json_schema_extra=_SOME_TEXT)
    working_directory: str | None = Field(None, json_schema_extra={"anyOf": [{"type": "string", **_NO_NUL},
                                                                             {"type": "null"}]})
    environment: dict[str, str] = Field(default_factory=dict, json_schema_extra=_ENV)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: ours: who asked (default: the server's user)
    user: str | None = None
    #: ours: where it runs (`local` or a configured target)
    target: str = "local"
    #: ours: `lenient` matches markers anywhere in a line, as the reference implementation does
    markers: Literal["strict", "lenient"] = "strict"
    #: ours (the reference's web UI sends it): seconds the command may run; then it is stopped and
    #: fails with abort reason `timeout`. Absent or null: no timeout
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False,
                                  description="ours: seconds the command may run, then it is stopped "
                                              "and fails with abort_reason timeout; null: none")


class CreateWorkflowBody(BaseModel):
    """Ours: run a workflow file on the server (`path`) or the workflow text itself (`text`)."""

    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra={"oneOf": [
        {"required": ["path"], "properties": {"path": {"type": "string"}}},
        {"required": ["text"], "properties": {"text": {"type": "string"}}},
    ]})
    #: exactly one of `path` and `text` (not null)
    path: str | None = None
    text: str | None = None
    targets: list[str] | None = None
    name: str | None = None
    user: str | None = None


class RerunBody(BaseModel):
    model_config = _BODY
    from_failed: bool = False


class ListExecutionsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=_INT64_MAX)
    status: ExecutionStatus | None = None
    user: str | None = None
    #: ours: case-insensitive text in the name or the command
    text: str | None = None


class ListArtifactsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    execution_id: str | None = None
    step_id: str | None = None
    artifact_type: ArtifactType | None = None
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=_INT64_MAX)


class LogLinesQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: lines with seq > after_seq ...
    after_seq: int = Field(-1, ge=_INT64_MIN, le=_INT64_MAX)
    #: ... and seq < before_seq
    before_seq: int | None = Field(None, ge=_INT64_MIN, le=_INT64_MAX)
    limit: int = Field(1000, ge=1, le=10_000)
    #: only these steps (repeat the parameter for several)
    step_id: list[str] | None = None
    newest_first: bool = False
    #: skip this many of the selected lines (in the order asked): the n-th line of a step's log
    offset: int = Field(0, ge=0, le=_INT64_MAX)


class ExecutionDetailQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: ours: list the branch steps too (one per target, the parents of its steps; a remote TUI's tree)
    branches: bool = False


class LogCountQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    step_id: list[str] | None = None


class UploadForm(BaseModel):
    """The fields of `POST /api/artifacts` (multipart/form-data)."""

    model_config = ConfigDict(extra="forbid")
    execution_id: str = Field(min_length=1)
    step_id: str | None = None
    name: str = Field(min_length=1)
    description: str = ""
    artifact_type: ArtifactType | None = None
    tags: list[str] = Field(default_factory=list)


UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["execution_id", "name", "file"],
    "additionalProperties": False,
    "properties": {
        "execution_id": {"type": "string", "minLength": 1},
        "step_id": {"type": "string"},
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "artifact_type": {"type": "string", "enum": [t.value for t in ArtifactType] + [""],
                          "description": "empty (as an HTML form sends it) or absent: from the file's type"},
        "tags": {"type": "array", "items": {"type": "string"},
                 "description": "repeat the field, or one JSON array, or comma-separated"},
        "file": {"type": "string", "format": "binary"},
    },
}


# -- responses ------------------------------------------------------------------------------------
class ExecutionOut(BaseModel):
    model_config = _OUT
    id: str
    name: str
    command: str
    working_directory: str
    status: ExecutionStatus
    exit_code: int | None
    error_message: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    environment: dict[str, str]
    user: str
    tags: list[str]
    total_steps: int
    completed_steps: int
    current_step_index: int | None
    duration_seconds: float | None
    progress_percentage: float
    metadata: dict[str, Any]
    # ours
    kind: Literal["workflow", "command", "job"]
    targets: list[str]
    abort_reason: str | None
    rerun_of: str | None


class StepOut(BaseModel):
    model_config = _OUT
    id: str
    execution_id: str
    name: str
    description: str
    index: int
    status: Literal["pending", "running", "completed", "failed", "skipped", "cancelled"]
    exit_code: int | None
    error_message: str | None
    created_at: str
    started_at: str | None
    completed_at: str | None
    estimated_duration: float | None
    stop_on_error: bool
    duration_seconds: float | None
    metadata: dict[str, Any]
    # ours: the tree (workflow steps, marker steps under them; the branch per target, their
    # parents, only with `?branches=true`)
    parent_id: str | None
    kind: Literal["branch", "workflow", "marker"]
    target: str
    progress: float | None
    abort_reason: str | None
    cpu_percent: float | None
    rss_bytes: int | None


class ArtifactOut(BaseModel):
    model_config = _OUT
    id: str
    execution_id: str
    step_id: str | None
    name: str
    description: str
    file_path: str
    file_name: str
    file_size: int
    mime_type: str
    artifact_type: ArtifactType
    created_at: str
    tags: list[str]
    is_public: bool
    retention_days: int
    download_url: str
    sha256: str


class ExecutionList(BaseModel):
    model_config = _OUT
    executions: list[ExecutionOut]
    total_count: int
    has_more: bool


class ExecutionDetail(BaseModel):
    model_config = _OUT
    execution: ExecutionOut
    steps: list[StepOut]
    artifacts: list[ArtifactOut]


class ExecutionCreated(BaseModel):
    model_config = _OUT
    execution_id: str
    status: ExecutionStatus
    created_at: str


class Message(BaseModel):
    model_config = _OUT
    message: str
    execution_id: str | None = None


class ArtifactList(BaseModel):
    model_config = _OUT
    artifacts: list[ArtifactOut]
    total_count: int
    has_more: bool


class ArtifactDetail(BaseModel):
    model_config = _OUT
    artifact: ArtifactOut


class LogLineOut(BaseModel):
    model_config = _OUT
    seq: int
    step_id: str | None
    step_name: str | None
    stream: Literal["stdout", "stderr", "system"]
    level: Literal["info", "error", "warning"]
    timestamp: str
    content: str


class LogLines(BaseModel):
    model_config = _OUT
    execution_id: str
    lines: list[LogLineOut]


class LogCount(BaseModel):
    model_config = _OUT
    execution_id: str
    count: int


class Health(BaseModel):
    model_config = _OUT
    status: Literal["healthy", "degraded"]
    timestamp: str
    version: str
    uptime_seconds: int
    database: Literal["connected", "error"]
    websocket: Literal["running", "stopped"]
    storage: Literal["accessible", "inaccessible"]


class SystemStatus(BaseModel):
    model_config = _OUT
    cpu_percent: float
    memory_percent: float
    disk_usage_percent: float
    load_average: list[float]


class DatabaseStatus(BaseModel):
    model_config = _OUT
    status: Literal["connected", "error"]
    size_mb: float
    wal_mode: bool
    # No `cache_hit_ratio` (the document's example has one): SQLite counts page-cache hits and
    # misses per connection (sqlite3_db_status CACHE_HIT/CACHE_MISS), which Python's sqlite3 does
    # not expose, and the store reads through a pool of connections besides. A made-up or
    # always-null figure would mislead a dashboard more than its absence (docs/api.md).


class WebSocketStatus(BaseModel):
    model_config = _OUT
    status: Literal["running", "stopped"]
    connected_clients: int
    total_messages: int


class HealthStatus(BaseModel):
    model_config = _OUT
    system: SystemStatus
    database: DatabaseStatus
    websocket: WebSocketStatus


class DatabaseMetrics(BaseModel):
    model_config = _OUT
    database_size_bytes: int
    database_size_mb: float
    table_counts: dict[str, int]
    wal_mode: str
    cache_size: int
    storage_path: str


class SystemMetrics(BaseModel):
    model_config = _OUT
    cpu_percent: float
    memory_percent: float
    disk_usage_percent: float
    open_connections: int


class Metrics(BaseModel):
    model_config = _OUT
    timestamp: str
    database: DatabaseMetrics
    system: SystemMetrics
    uptime_seconds: int


class DatabaseStats(BaseModel):
    model_config = _OUT
    total_executions: int
    running_executions: int
    completed_executions: int
    failed_executions: int
    total_steps: int
    total_artifacts: int
    database_size_mb: float
    oldest_execution: str | None
    newest_execution: str | None
    # ours
    pending_executions: int
    cancelled_executions: int
    total_log_lines: int


class OptimizeResult(BaseModel):
    model_config = _OUT
    status: Literal["optimization_completed"]
    timestamp: str
    operations_performed: list[str]
    metrics: Metrics

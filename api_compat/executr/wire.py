"""executr's wire format: the bodies it takes (validated with pydantic) and the job it answers,
built from a job's queue item (its fields, status, executor, report) and its execution (attempts).

Timestamps are UTC in RFC 3339 (`2024-01-01T12:00:00Z`); optional fields are left out when empty,
as the reference's Go client expects (`omitempty`)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.jobs import attempts_of, job_fields
from engine.model import Execution
from engine.store import QueueItem

#: how many jobs one bulk request may submit
MAX_BULK = 100
DEFAULT_MAX_RETRIES = 3


class Priority(enum.StrEnum):
    FOREGROUND = "foreground"
    BACKGROUND = "background"
    BEST_EFFORT = "best_effort"


#: a priority's place in the work queue: higher is claimed first
PRIORITY_LEVEL = {Priority.FOREGROUND: 2, Priority.BACKGROUND: 1, Priority.BEST_EFFORT: 0}
PRIORITY_OF_LEVEL = {level: p for p, level in PRIORITY_LEVEL.items()}


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class _Body(BaseModel):
    # Python's regular expressions, as the OpenAPI document's patterns are read by the fuzzers too
    model_config = ConfigDict(extra="ignore", regex_engine="python-re")


#: white space as JSON Schema's regular expressions (ECMA-262) have it, written out: the document's
#: readers and this server then agree on what "no spaces" is
_SPACE = "\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
TYPE_PATTERN = f"^[^{_SPACE}]+$"
#: a URL of http(s) with a host, or of file
URL_PATTERN = r"^(?:https?://[A-Za-z0-9._~%!$&'()*+,;=:@-]+(?:[/?#].*)?|file:.+)$"


class JobSubmission(_Body):
    type: Annotated[str, Field(min_length=1, max_length=200, pattern=TYPE_PATTERN,
                                     description="Job type (no spaces)")]
    binary_url: Annotated[str, Field(min_length=1, max_length=4096, pattern=URL_PATTERN,
                                     description="http, https or file URL")]
    binary_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the binary, 64 hex digits")]
    arguments: list[str] = Field(default_factory=list)
    env_variables: dict[str, str] = Field(default_factory=dict)
    priority: Priority = Priority.BACKGROUND
    #: ours (the reference's later model has it too): attempts after the first when a worker goes silent
    max_retries: Annotated[int, Field(ge=0, le=100)] = DEFAULT_MAX_RETRIES

    @field_validator("type", "binary_url", "binary_sha256")
    @classmethod
    def _no_trailing_newline(cls, value: str) -> str:
        # `$` of the patterns matches before a last newline: what is kept has none
        return value.rstrip("\n")

    @field_validator("binary_sha256")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class ClaimRequest(_Body):
    executor_id: Annotated[str, Field(min_length=1, max_length=200)]
    executor_ip: Annotated[str, Field(max_length=200)] = ""


class HeartbeatRequest(_Body):
    executor_id: Annotated[str, Field(min_length=1, max_length=200)]


class CompleteRequest(_Body):
    executor_id: Annotated[str, Field(min_length=1, max_length=200)]
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


class FailRequest(_Body):
    executor_id: Annotated[str, Field(min_length=1, max_length=200)]
    error_message: str = ""
    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None


class OutputStream(enum.StrEnum):
    STDOUT = "stdout"
    STDERR = "stderr"


class OutputChunk(_Body):
    stream: OutputStream
    offset: Annotated[int, Field(ge=0, le=2**62, description="where `text` starts in its stream: bytes of "
                                                             "UTF-8 sent on it before")]
    text: str


class OutputRequest(_Body):
    """stepflow's extension: output of a running job, in the order it was printed."""

    executor_id: Annotated[str, Field(min_length=1, max_length=200)]
    chunks: Annotated[list[OutputChunk], Field(max_length=10_000)]


class BulkCancelRequest(_Body):
    job_ids: Annotated[list[str], Field(min_length=1, max_length=1000)]


class Attempt(BaseModel):
    executor_id: str
    executor_ip: str = ""
    started_at: str
    ended_at: str | None = None
    status: str
    error_message: str | None = None


class Job(BaseModel):
    """A job as GET, claim and list answer it (list leaves out output and attempts)."""

    id: str
    type: str
    binary_url: str
    binary_sha256: str
    arguments: list[str] | None = None
    env_variables: dict[str, str] | None = None
    priority: Priority
    status: JobStatus
    executor_id: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    exit_code: int | None = None
    error_message: str | None = None
    created_at: str
    started_at: str | None = None
    completed_at: str | None = None
    last_heartbeat: str | None = None
    max_retries: int | None = None
    attempts: list[Attempt] | None = None


class Submitted(BaseModel):
    id: str
    type: str
    status: JobStatus
    priority: Priority
    created_at: str


class BulkResult(BaseModel):
    index: int
    success: bool
    job_id: str | None = None
    error: str | None = None


class BulkSubmitted(BaseModel):
    total: int
    successful: int
    failed: int
    results: list[BulkResult]


class CancelResult(BaseModel):
    job_id: str
    cancelled: bool
    error: str | None = None


class BulkCancelled(BaseModel):
    cancelled: int
    failed: int
    total: int
    errors: list[str]
    results: list[CancelResult]


def rfc3339(at: datetime | None) -> str | None:
    if at is None:
        return None
    if at.tzinfo is not UTC:  # the store's times are UTC already: a job's answer has five of them
        at = at.astimezone(UTC)
    return f"{at.isoformat()[:-6]}Z"


def parse_job_id(raw: str) -> str | None:
    """The canonical text of a job id (a UUID), None when it is not one."""
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def priority_of(level: int) -> Priority:
    return PRIORITY_OF_LEVEL.get(level, Priority.BEST_EFFORT if level < 0 else Priority.FOREGROUND)


def job_json(item: QueueItem, execution: Execution | None = None, *, full: bool = True) -> dict[str, Any]:
    fields = job_fields(item)
    result = item.result if isinstance(item.result, dict) else {}
    job: dict[str, Any] = {
        "id": item.id,
        "type": fields.get("type", ""),
        "binary_url": fields.get("binary_url", ""),
        "binary_sha256": fields.get("binary_sha256", ""),
        "arguments": fields.get("arguments") or None,
        "env_variables": fields.get("env_variables") or None,
        "priority": priority_of(item.priority).value,
        "status": item.status.value,
        "executor_id": item.worker,
        "created_at": rfc3339(item.created_at),
        "started_at": rfc3339(item.claimed_at),
        "completed_at": rfc3339(item.finished_at),
        "last_heartbeat": rfc3339(item.heartbeat_at),
        "max_retries": item.max_attempts - 1,
    }
    if full:
        job["stdout"] = result.get("stdout") or None
        job["stderr"] = result.get("stderr") or None
        exit_code = result.get("exit_code")
        job["exit_code"] = exit_code if isinstance(exit_code, int) else None
        job["error_message"] = result.get("error_message") or result.get("error") or None
        job["attempts"] = [_attempt(a) for a in attempts_of(execution)]
    elif item.status.value == "failed":
        job["error_message"] = result.get("error_message") or result.get("error") or None
    return {k: v for k, v in job.items() if v is not None}


def _attempt(stored: Mapping[str, Any]) -> dict[str, Any]:
    attempt = {k: v for k, v in stored.items() if v is not None}
    for key in ("started_at", "ended_at"):
        if isinstance(attempt.get(key), str):
            try:
                attempt[key] = rfc3339(datetime.fromisoformat(attempt[key]))
            except ValueError:
                pass
    return attempt

"""OpsConductor's wire format: the bodies it takes (validated with pydantic, as the document writes
them) and the JSON it answers for targets, jobs, executions and branches.

Timestamps are RFC 3339 UTC with `Z` (`2025-01-08T10:00:00Z`; fractions of a second when there are).
Extra fields (the documented ones are all there): jobs `target_ids`, `updated_at`; executions
`job_id`, `job_serial`, `created_at`, `duration`, `error_message`, `stepflow_execution_id` (the
execution's id in the StepFlow Monitor API, the TUI and `stepflow ls`); branches
`execution_serial`, `target_name`, `duration`, `error_message`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from api_compat.opsconductor.serials import branch_id
from engine.store import RegistryEntry
from engine.store.opsconductor import SCHEDULED, OpsBranch, OpsExecution, OpsJob

#: what a job and an action may be: the document's examples use `command`; others are refused (422)
SUPPORTED_TYPES = ("command",)
MAX_ACTIONS = 100
MAX_TARGETS = 1000
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", regex_engine="python-re")


def _supported(kind: str, value: str) -> str:
    if value not in SUPPORTED_TYPES:
        raise ValueError(f"{kind} {value!r} is not supported (supported: {', '.join(SUPPORTED_TYPES)})")
    return value


#: in the document: the one type supported; a request with another is answered 422 naming it
_TYPES_SCHEMA: dict[str, Any] = {"enum": list(SUPPORTED_TYPES)}
#: a command: some text that is not only spaces, without NUL
COMMAND_PATTERN = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


class ActionParameters(BaseModel):
    model_config = ConfigDict(extra="allow", regex_engine="python-re")

    command: Annotated[str, Field(pattern=COMMAND_PATTERN, description="the shell text run on each target")]
    timeout: Annotated[float, Field(gt=0, description="ours: seconds the action may run")] | None = None


class Action(_Body):
    action_type: str = Field(description="`command` (others are refused with 422)", json_schema_extra=_TYPES_SCHEMA)
    action_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    action_parameters: dict[str, Any] = Field(
        description="`command` (required: the shell text run on each target); `timeout` (ours: seconds)",
        json_schema_extra=ActionParameters.model_json_schema())

    @field_validator("action_type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _supported("action_type", value)

    @field_validator("action_parameters")
    @classmethod
    def _parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        command = value.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ValueError("action_parameters.command must be the command to run (a non-empty string)")
        if "\x00" in command:
            raise ValueError("action_parameters.command contains a NUL character")
        timeout = value.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0):
            raise ValueError("action_parameters.timeout must be a positive number of seconds")
        return value


class JobCreate(_Body):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=10_000)] = ""
    job_type: str = Field("command", description="`command` (others are refused with 422)",
                          json_schema_extra=_TYPES_SCHEMA)
    actions: Annotated[list[Action], Field(min_length=1, max_length=MAX_ACTIONS)]
    #: the targets a scheduled job runs on, and the default of `execute`
    target_ids: Annotated[list[int], Field(max_length=MAX_TARGETS)] = Field(default_factory=list)
    #: a job in the future is `scheduled` and starts then (on `target_ids`); one in the past, at once
    scheduled_at: datetime | None = None

    @field_validator("job_type")
    @classmethod
    def _type(cls, value: str) -> str:
        return _supported("job_type", value)

    @field_validator("scheduled_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)  # a time without a zone is UTC
        return value


class ExecuteBody(_Body):
    #: default: the job's own `target_ids`
    target_ids: Annotated[list[int], Field(min_length=1, max_length=MAX_TARGETS)] | None = None


TargetType = Literal["ssh", "docker", "local"]
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_TEXT = r"\S"


class TargetFields(_Body):
    """What PATCH may change of a target created over the API (not its name, nor its type). `host`,
    `port` and `user` are where SSH logs in; `key`, `known_hosts`, `password_env`, `connect_timeout`
    as in a targets file; `image` and `docker_host` for Docker."""

    host: Annotated[str, Field(min_length=1, max_length=255, pattern=_TEXT)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    ip_address: Annotated[str, Field(max_length=100)] | None = None
    key: str | None = None
    known_hosts: str | None = None
    password_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    connect_timeout: Annotated[float, Field(gt=0, le=3600)] | None = None
    image: Annotated[str, Field(min_length=1, pattern=_TEXT)] | None = None
    docker_host: str | None = None


class _NewTarget(TargetFields):
    name: Annotated[str, Field(pattern=NAME_PATTERN, description="letters, digits, . _ - (up to 100)")]


class SshTargetCreate(_NewTarget):
    type: Literal["ssh"]
    host: Annotated[str, Field(min_length=1, max_length=255, pattern=_TEXT)]


class DockerTargetCreate(_NewTarget):
    type: Literal["docker"]
    image: Annotated[str, Field(min_length=1, pattern=_TEXT)]


class LocalTargetCreate(_NewTarget):
    type: Literal["local"]


#: ours: a target to register (the document has no route to create one)
TargetCreate: Any = TypeAdapter(Annotated[SshTargetCreate | DockerTargetCreate | LocalTargetCreate,
                                          Field(discriminator="type")])
#: (its discriminator's mapping names `$defs`, which the document hoists: the `type` consts say the same)
TARGET_CREATE_SCHEMA = {k: v for k, v in TargetCreate.json_schema().items() if k != "discriminator"}


class BulkLookup(_Body):
    serials: Annotated[list[str], Field(min_length=1, max_length=1000)]


# -- answers -------------------------------------------------------------------------------------------
def rfc3339(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def job_status(job: OpsJob) -> str:
    """`scheduled` while it waits for its time, else its latest execution's status, else `created`."""
    if job.schedule_state == SCHEDULED:
        return "scheduled"
    return job.last_status or "created"


def job_json(job: OpsJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "job_uuid": job.uuid,
        "job_serial": job.serial,
        "name": job.name,
        "description": job.description,
        "job_type": job.job_type,
        "status": job_status(job),
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "scheduled_at": rfc3339(job.scheduled_at),
        "target_ids": job.target_ids,
        "actions": job.actions,
    }


def branch_json(branch: OpsBranch) -> dict[str, Any]:
    return {
        "id": branch.id,
        "branch_uuid": branch.uuid,
        "branch_serial": branch.serial,
        "branch_id": branch_id(branch.number),
        "execution_serial": branch.serial.rsplit(".", 1)[0],
        "target_id": branch.target_id,
        "target_serial_ref": branch.target_serial,
        "target_name": branch.target_name,
        "status": branch.status,
        "started_at": rfc3339(branch.started_at),
        "completed_at": rfc3339(branch.completed_at),
        "duration": _rounded(branch.duration),
        "exit_code": branch.exit_code,
        "error_message": branch.error,
    }


def execution_json(execution: OpsExecution, *, branches: bool = True) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "id": execution.id,
        "execution_uuid": execution.uuid,
        "execution_serial": execution.serial,
        "execution_number": execution.number,
        "job_id": execution.job_id,
        "job_serial": execution.serial.split(".", 1)[0],
        "status": execution.status,
        "created_at": rfc3339(execution.created_at),
        "started_at": rfc3339(execution.started_at),
        "completed_at": rfc3339(execution.completed_at),
        "duration": _rounded(execution.duration),
        "error_message": execution.error,
        "stepflow_execution_id": execution.execution_id,
    }
    if branches:
        answer["branches"] = [branch_json(b) for b in execution.branches]
    return answer


def target_json(entry: RegistryEntry) -> dict[str, Any]:
    data = entry.data
    return {
        "id": entry.id,
        "target_serial": entry.serial,
        "name": entry.name,
        "type": data.get("type", "ssh"),
        "host": data.get("host"),
        "port": data.get("port"),
        "user": data.get("user"),
        "ip_address": data.get("ip_address"),
        #: `file`: imported from the targets file at start; `api`: created here
        "source": data.get("source", "api"),
        "created_at": rfc3339(entry.created_at),
        "updated_at": rfc3339(entry.updated_at),
    }


def target_ref(entry: RegistryEntry | None, branch: OpsBranch) -> dict[str, Any]:
    """The target as a branch shows it (as it was when the branch ran, if it is gone since)."""
    if entry is None:
        return {"id": branch.target_id, "target_serial": branch.target_serial, "name": branch.target_name,
                "ip_address": None}
    return {"id": entry.id, "target_serial": entry.serial, "name": entry.name,
            "ip_address": entry.data.get("ip_address")}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def rate(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0

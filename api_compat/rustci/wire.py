"""RustCI's wire format: the bodies the runner API takes (validated with pydantic), its enums, and
timestamps (RFC 3339 UTC with `Z`)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema

from api_compat.request_parsing import JsonNumbers


class RunnerType(enum.StrEnum):
    DOCKER = "docker"
    KUBERNETES = "kubernetes"
    NATIVE = "native"
    LOCAL = "local"
    #: ours: a host reached over SSH
    SSH = "ssh"
    #: ours: `stepflow worker --rustci-runner` processes that take its jobs' steps from the queue
    WORKER = "worker"


class RunnerStatus(enum.StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    ERROR = "error"


class RunnerJobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunnerLogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


LEVEL_RANK = {RunnerLogLevel.DEBUG: 0, RunnerLogLevel.INFO: 1, RunnerLogLevel.WARN: 2, RunnerLogLevel.ERROR: 3}


class _Body(JsonNumbers):
    # numbers and booleans as JSON has them (JsonNumbers, StrictBool): `true` is not 1, "3" is not 3
    model_config = ConfigDict(extra="ignore", regex_engine="python-re")


Name = Annotated[str, Field(min_length=1, max_length=200)]


class RunnerResources(_Body):
    cpu_cores: float | None = Field(None, ge=0)
    memory_gb: float | None = Field(None, ge=0)
    disk_gb: float | None = Field(None, ge=0)


class RunnerRegisterRequest(_Body):
    name: Name
    #: `kubernetes` is read, and answered 422 "not supported yet"
    type: Annotated[RunnerType, WithJsonSchema({"type": "string", "enum": ["docker", "native", "local", "ssh", "worker"],
                                                "description": "kubernetes: 422, not supported yet"})]
    host: Annotated[str, Field(max_length=255)] = "localhost"
    port: int | None = Field(None, ge=1, le=65535)
    capabilities: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=100)
    resources: RunnerResources = Field(default_factory=lambda: RunnerResources.model_validate({}))


class RunnerUpdateRequest(_Body):
    name: Name | None = None
    capabilities: list[Annotated[str, Field(max_length=100)]] | None = Field(None, max_length=100)
    metadata: dict[str, Any] | None = None
    tags: list[Annotated[str, Field(max_length=100)]] | None = Field(None, max_length=100)
    resources: RunnerResources | None = None


class RunnerJobStep(_Body):
    name: Name
    run: Annotated[str, Field(min_length=1)]


class RunnerJobRequest(_Body):
    name: Name
    steps: Annotated[list[RunnerJobStep], Field(min_length=1, max_length=500)]
    environment: dict[str, str] = Field(default_factory=dict)
    #: seconds the job may run (each step, at most; and the runner's `job_timeout`)
    timeout: float | None = Field(None, gt=0, le=7 * 86400)
    retry_count: int = Field(0, ge=0, le=100)


class RunnerResourceLimits(_Body):
    model_config = ConfigDict(extra="allow")
    #: CPU in millicores ("2000m") or CPUs ("2", "0.5")
    cpu_limit: str | None = Field(None, pattern=r"^\d+(\.\d+)?m?$")
    #: memory ("4Gi", "512Mi", "512m", "2g")
    memory_limit: str | None = Field(None, pattern=r"^\d+(\.\d+)?([KMGkmg]i?|[bB])?$")
    disk_limit: str | None = None


class RunnerDockerConfig(_Body):
    model_config = ConfigDict(extra="allow")
    privileged: StrictBool | None = None
    network_mode: str | None = None
    volumes: list[str] | None = None
    #: ours: the image jobs run in (default: STEPFLOW_RUSTCI_IMAGE, else ubuntu:latest)
    image: str | None = Field(None, min_length=1)


class RunnerConfigUpdate(_Body):
    max_concurrent_jobs: int | None = Field(None, ge=0, le=1000)
    job_timeout: float | None = Field(None, gt=0, le=30 * 86400)
    cleanup_policy: Literal["always", "on_success", "never"] | None = None
    resource_limits: RunnerResourceLimits | None = None
    docker_config: RunnerDockerConfig | None = None


class RunnerStopRequest(_Body):
    graceful: StrictBool = False
    timeout: float = Field(300, ge=0, le=86400)
    reason: Annotated[str, Field(max_length=1000)] = ""


class RunnerBulkOperation(enum.StrEnum):
    UPDATE_CONFIG = "update_config"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    DELETE = "delete"


class RunnerBulkFilters(_Body):
    status: RunnerStatus | None = None
    type: RunnerType | None = None
    tags: list[str] = Field(default_factory=list)


class RunnerBulkRequest(_Body):
    operation: RunnerBulkOperation
    filters: RunnerBulkFilters = Field(default_factory=lambda: RunnerBulkFilters.model_validate({}))
    data: dict[str, Any] = Field(default_factory=dict)


class Success(BaseModel):
    success: bool = True
    message: str = ""


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

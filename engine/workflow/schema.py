"""What a workflow file may contain: pydantic models used to validate the YAML and to publish it
as JSON Schema.

These models describe the file as written. `engine.workflow.load` turns a validated file into the
engine's own frozen types (defaults applied, paths resolved) and maps validation errors back to
positions in the file.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from engine.env_names import env_name_problem

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

Markers = Literal["strict", "lenient"]
TARGET_TYPES = ("local", "ssh", "docker", "worker")

# -- value types ----------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+", re.IGNORECASE)
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# the same grammar for editors (ECMA-262: no inline flags)
_DURATION_PATTERN = r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?\s*([mM][sS]|[sSmMhHdD])\s*)+)\s*$"


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as "90", "90s", "10m", "1h30m", "1.5h", "500ms"."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90, '90s', '10m' or '1h30m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        if _DURATION_RE.fullmatch(text):
            return sum(
                float(number) * _DURATION_UNITS[unit.lower()]
                for number, unit in _DURATION_PART_RE.findall(text)
            )
    raise ValueError("expected a duration like 90, '90s', '10m' or '1h30m'")


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than 0 (leave it out, or null, for no timeout)")
    return seconds


def _grace(value: Any) -> float:
    if value is None:
        raise ValueError("expected a duration like 10 or '10s', got null")
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _positive_duration(value: Any) -> float:
    if value is None:
        raise ValueError("expected a duration like 10 or '10s', got null")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be greater than 0")
    return seconds


def _duration_schema(bound: str, *, nullable: bool = False) -> dict[str, Any]:
    choices: list[dict[str, Any]] = [
        {"type": "number", bound: 0},
        {"type": "string", "pattern": _DURATION_PATTERN},
    ]
    return {"anyOf": [*choices, {"type": "null"}] if nullable else choices}


#: seconds, > 0, or null for none; also "90s", "10m", "1h30m"
Timeout = Annotated[
    float | None,
    BeforeValidator(_timeout),
    WithJsonSchema(_duration_schema("exclusiveMinimum", nullable=True)),
]
#: seconds, >= 0; also "90s", "10m"
Grace = Annotated[float, BeforeValidator(_grace), WithJsonSchema(_duration_schema("minimum"))]
#: seconds, > 0; also "90s", "10m"
PositiveDuration = Annotated[
    float, BeforeValidator(_positive_duration), WithJsonSchema(_duration_schema("exclusiveMinimum"))
]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


NonEmptyStr = Annotated[str, AfterValidator(_not_blank), WithJsonSchema({"type": "string", "minLength": 1})]

def _env_name(value: str) -> str:
    if problem := env_name_problem(value):
        raise ValueError(problem)
    return value


EnvName = Annotated[
    str,
    AfterValidator(_env_name),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}),
]


def _env_value(value: Any) -> Any:
    # The loader hands over the scalar as written ("0755", "yes", "1.10"); this covers other callers.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


EnvValue = Annotated[
    str,
    BeforeValidator(_env_value),
    WithJsonSchema({"type": ["string", "number", "boolean"]}),
]
Env = Annotated[
    dict[EnvName, EnvValue],
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        }
    ),
]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


_ONE_OR_MANY_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}},
    ]
}

#: a list of strings; a single string is taken as a one-item list
StrList = Annotated[list[NonEmptyStr], BeforeValidator(_one_or_many), WithJsonSchema(_ONE_OR_MANY_SCHEMA)]
EnvNameList = Annotated[
    list[EnvName],
    BeforeValidator(_one_or_many),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}},
            ]
        }
    ),
]
TargetList = Annotated[
    list[NonEmptyStr],
    BeforeValidator(_one_or_many),
    Field(min_length=1),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
            ]
        }
    ),
]

_MEMORY_RE = re.compile(r"\d+(?:\.\d+)?[bkmg]?", re.IGNORECASE)


def _memory(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not _MEMORY_RE.fullmatch(value.strip()):
        raise ValueError("expected a size like '512m' or '2g' (units b, k, m, g)")
    return value.strip() if isinstance(value, str) else value


Memory = Annotated[
    str,
    BeforeValidator(_memory),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^\\d+(\\.\\d+)?[bkmgBKMG]?$"},
                {"type": "integer", "minimum": 0},
            ]
        }
    ),
]

# -- models -----------------------------------------------------------------------------------


class FileModel(BaseModel):
    # strict: YAML already types its scalars, so `retries: "2"` or `continue_on_error: 1` is a
    # mistake to report, not something to guess at.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DefaultsModel(FileModel):
    """Values every step gets unless it sets its own."""

    model_config = ConfigDict(title="defaults")

    timeout: Timeout = Field(
        None,
        description="Seconds a step may run before it is stopped (also '90s', '10m', '1h30m'); null: none.",
    )
    shell: NonEmptyStr = Field(
        "bash", description="The shell that runs each step's `run` text (`SHELL -c TEXT`)."
    )
    cwd: str | None = Field(
        None, description="Working directory of the steps; a relative path is relative to the workflow file."
    )
    retries: int = Field(0, ge=0, description="How many times a failed step is run again.")
    kill_grace: Grace = Field(
        10.0, description="Seconds between SIGTERM and SIGKILL when a step is stopped (also '10s')."
    )


class StepModel(FileModel):
    """One step: a shell command, run once its `needs` have completed."""

    model_config = ConfigDict(title="step")

    name: NonEmptyStr = Field(description="Unique name of the step; other steps name it in `needs`.")
    run: NonEmptyStr = Field(description="The command text, run by the shell (`bash -c` by default).")
    description: str = Field("", description="A line for people, shown beside the step.")
    env: Env = Field(
        default_factory=dict, description="Environment variables for this step (over the workflow's)."
    )
    cwd: str | None = Field(
        None,
        description="Working directory; a relative path is relative to the workflow file. Default: defaults.cwd.",
    )
    timeout: Timeout = Field(
        None,
        description="Seconds the step may run (also '90s', '10m', '1h30m'); default: defaults.timeout; null: none.",
    )
    retries: int | None = Field(
        None, ge=0, description="Times to run the step again when it fails; default: defaults.retries."
    )
    continue_on_error: bool = Field(
        False,
        description="When true, a failure of this step does not fail the branch, and steps needing it still run.",
    )
    needs: StrList = Field(
        default_factory=list, description="Names of steps that must complete first (a string or a list)."
    )
    artifacts: StrList = Field(
        default_factory=list,
        description="Glob patterns, relative to the step's working directory, of files to keep after the step.",
    )
    runs_on: TargetList | None = Field(
        None,
        description="Target(s) this step runs on (a string or a list); default: the workflow's `runs_on`.",
    )
    shell: NonEmptyStr | None = Field(None, description="The shell for this step; default: defaults.shell.")
    markers: Markers | None = Field(
        None,
        description="How step markers are recognised in this step's output: 'strict' (at line start) or "
        "'lenient' (anywhere, any case); default: the workflow's `markers`.",
    )


class LocalTargetModel(FileModel):
    """This machine."""

    model_config = ConfigDict(title="local target")

    type: Literal["local"] = Field(description="Target kind.")


def _without_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class SshTargetModel(FileModel):
    """A host reached over SSH (~/.ssh/config is honoured)."""

    model_config = ConfigDict(title="ssh target")

    type: Literal["ssh"] = Field(description="Target kind.")
    host: NonEmptyStr = Field(description="Host name or address (or a Host alias from ~/.ssh/config).")
    user: str | None = Field(
        None, description="User to log in as; default: from ~/.ssh/config, else the local user."
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="SSH port; default: from ~/.ssh/config, else 22."
    )
    key: str | None = Field(
        None,
        description="Path of a private key file; relative paths are relative to the workflow file; "
        "default: IdentityFile from ~/.ssh/config, the agent and the default key files.",
    )
    password_env: EnvName | None = Field(
        None, description="Name of an environment variable holding the password (never the password itself)."
    )
    # left out and null differ (null turns checking off): the default is not shown to editors
    known_hosts: str | None = Field(
        None,
        description="Path of the known_hosts file used to check the host key; default: UserKnownHostsFile "
        "from ~/.ssh/config, else ~/.ssh/known_hosts; null disables host key checking.",
        json_schema_extra=_without_default,
    )
    trust_on_first_use: bool = Field(
        False, description="Accept and record the host key of a host not yet in known_hosts."
    )
    jump_host: str | None = Field(
        None, description="A host to connect through ([user@]host[:port]); default: ProxyJump from ~/.ssh/config."
    )
    connect_timeout: PositiveDuration | None = Field(
        None,
        description="Seconds to wait for the connection (also '30s'); default: ConnectTimeout from "
        "~/.ssh/config, else 10.",
    )


class DockerTargetModel(FileModel):
    """A container started from an image, through the Docker Engine API."""

    model_config = ConfigDict(title="docker target")

    type: Literal["docker"] = Field(description="Target kind.")
    image: NonEmptyStr = Field(description="Image to run, such as python:3.12-slim.")
    docker_host: str | None = Field(
        None,
        description="Docker Engine API address (unix:///..., tcp://...); default: DOCKER_HOST or the local socket.",
    )
    volumes: StrList = Field(
        default_factory=list, description="Volumes to mount, as 'SOURCE:DEST[:ro]' (a string or a list)."
    )
    cpus: float | None = Field(None, gt=0, description="CPU limit, in CPUs (0.5, 2...).")
    memory: Memory | None = Field(None, description="Memory limit such as '512m' or '2g'.")
    workdir: str | None = Field(None, description="Working directory inside the container.")
    reuse: bool = Field(
        False, description="Run every step of the branch in one container instead of one per step."
    )
    keep: bool = Field(False, description="Keep the container after the execution (for inspection).")
    pull: bool = Field(False, description="Pull the image before starting, even when it is present.")


class WorkerTargetModel(FileModel):
    """Commands run by the `stepflow worker` processes serving a pool (they ask for them; stepflow's
    RustCI runners of type `worker` are such pools)."""

    model_config = ConfigDict(title="worker target")

    type: Literal["worker"] = Field(description="Target kind.")
    pool: NonEmptyStr = Field(description="The pool whose workers run the commands.")


TargetModel = Annotated[
    LocalTargetModel | SshTargetModel | DockerTargetModel | WorkerTargetModel,
    Field(discriminator="type"),
]
TARGET_MODELS: dict[str, type[FileModel]] = {
    "local": LocalTargetModel,
    "ssh": SshTargetModel,
    "docker": DockerTargetModel,
    "worker": WorkerTargetModel,
}


class WorkflowModel(FileModel):
    """A stepflow workflow: steps forming a DAG, run on one or more targets."""

    # keys starting with "x-" are ignored by the loader: a place for YAML anchors
    model_config = ConfigDict(title="stepflow workflow", json_schema_extra={"patternProperties": {"^x-": {}}})

    name: NonEmptyStr | None = Field(
        None, description="Name of the workflow; default: the file name without extension."
    )
    description: str = Field("", description="A line or two for people.")
    env: Env = Field(default_factory=dict, description="Environment variables for every step.")
    secrets: EnvNameList = Field(
        default_factory=list, description="Names of environment variables whose values are masked in logs."
    )
    targets: dict[NonEmptyStr, TargetModel] = Field(
        default_factory=dict,
        description="Named targets (`local` always exists); more come from the user's targets file.",
    )
    runs_on: TargetList = Field(
        default_factory=lambda: ["local"],
        description="Default target(s) of the steps, a string or a list; one branch per target.",
    )
    defaults: DefaultsModel = Field(
        default_factory=lambda: DefaultsModel.model_validate({}),
        description="Values every step gets unless it sets its own.",
    )
    steps: list[StepModel] = Field(min_length=1, description="The steps; at least one.")
    markers: Markers = Field(
        "strict",
        description="How step markers are recognised in output: 'strict' (keyword at line start) or "
        "'lenient' (anywhere, any case).",
    )
    max_parallel: int = Field(4, ge=1, description="Steps run at the same time, at most, in one branch.")
    max_parallel_targets: int = Field(8, ge=1, description="Target branches run at the same time, at most.")
    fail_fast: bool = Field(
        False,
        description="When a target branch fails, cancel the other branches at once instead of letting them finish.",
    )
    allow_failed_targets: bool = Field(
        False, description="When true, a failed target branch does not fail the execution."
    )


def workflow_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a workflow file, with descriptions, for editors."""
    schema = WorkflowModel.model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}

"""A workflow as it runs: frozen dataclasses with the defaults already applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from engine.workflow.schema import Markers

#: the target every workflow has, whether its file names it or not
LOCAL = "local"


@dataclass(frozen=True, slots=True)
class LocalTarget:
    name: str = LOCAL
    type: Literal["local"] = field(default="local", init=False)


@dataclass(frozen=True, slots=True)
class SshTarget:
    name: str
    host: str
    #: None here and below: what ~/.ssh/config says for the host, else SSH's default
    user: str | None = None
    port: int | None = None
    #: private key file (relative paths already resolved against the workflow file's folder)
    key: str | None = None
    #: name of an environment variable holding the password
    password_env: str | None = None
    #: None: ~/.ssh/config's UserKnownHostsFile, else ~/.ssh/known_hosts
    known_hosts: str | None = None
    #: False: accept any host key (`known_hosts: null`)
    check_host_keys: bool = True
    trust_on_first_use: bool = False
    jump_host: str | None = None
    #: seconds
    connect_timeout: float | None = None
    type: Literal["ssh"] = field(default="ssh", init=False)


@dataclass(frozen=True, slots=True)
class DockerTarget:
    name: str
    image: str
    docker_host: str | None = None
    volumes: list[str] = field(default_factory=list)
    cpus: float | None = None
    #: a size such as "512m"
    memory: str | None = None
    workdir: str | None = None
    #: one container for the whole branch instead of one per step
    reuse: bool = False
    #: leave the container behind after the execution
    keep: bool = False
    #: pull the image even when it is present
    pull: bool = False
    type: Literal["docker"] = field(default="docker", init=False)


@dataclass(frozen=True, slots=True)
class WorkerTarget:
    """Commands run by the `stepflow worker` processes of a pool (engine.runners.worker)."""

    name: str
    pool: str
    type: Literal["worker"] = field(default="worker", init=False)


Target = LocalTarget | SshTarget | DockerTarget | WorkerTarget


@dataclass(frozen=True, slots=True)
class Defaults:
    #: seconds; None: no timeout
    timeout: float | None = None
    shell: str = "bash"
    cwd: str | None = None
    retries: int = 0
    #: seconds between SIGTERM and SIGKILL
    kill_grace: float = 10.0


@dataclass(frozen=True, slots=True)
class WorkflowStep:
    name: str
    run: str
    #: 1-based line of the step in the file, for messages
    line: int = 0
    description: str = ""
    #: the step's own variables (the workflow's `env` is not merged in)
    env: dict[str, str] = field(default_factory=dict)
    #: the step's cwd, else defaults.cwd; relative paths resolved against the file's folder
    cwd: str | None = None
    #: seconds: the step's own, else defaults.timeout; None: no timeout
    timeout: float | None = None
    retries: int = 0
    continue_on_error: bool = False
    needs: list[str] = field(default_factory=list)
    #: glob patterns relative to the step's working directory
    artifacts: list[str] = field(default_factory=list)
    #: None: every target of the workflow's `runs_on`
    runs_on: list[str] | None = None
    shell: str = "bash"
    markers: Markers = "strict"


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    steps: list[WorkflowStep]
    description: str = ""
    env: dict[str, str] = field(default_factory=dict)
    #: names of environment variables whose values are masked
    secrets: list[str] = field(default_factory=list)
    #: the file's targets, plus `local` always
    targets: dict[str, Target] = field(default_factory=lambda: {LOCAL: LocalTarget()})
    runs_on: list[str] = field(default_factory=lambda: [LOCAL])
    defaults: Defaults = field(default_factory=Defaults)
    markers: Markers = "strict"
    max_parallel: int = 4
    max_parallel_targets: int = 8
    fail_fast: bool = False
    allow_failed_targets: bool = False
    #: absolute path of the file, when it came from one
    source_path: str | None = None
    source_text: str = ""

    def step(self, name: str) -> WorkflowStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

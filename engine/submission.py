"""One submission request: what every surface (CLI, TUI, API, remote client) hands the engine's
`submit`, and how a command request becomes an execution and its plan.

A workflow request is planned by `engine.workflow.plan` (after the file is read and validated); a
command request here, in `plan_command`.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.env_names import env_name_problem
from engine.errors import InvalidRequest
from engine.execution.run import ExecutionPlan, StepPlan
from engine.masking import Masker
from engine.model import Execution, ExecutionKind, Step, StepKind, new_id
from engine.runners.base import CommandSpec
from engine.surrogates import replace_in, replace_surrogates, unencodable

#: where an execution's plan settings live in its metadata (kept so that a rerun, or a restart of
#: a queued one, runs with them too)
MARKERS_KEY = "markers"
TIMEOUT_KEY = "timeout"
#: the names (never the values) of a command's secrets
SECRETS_KEY = "secrets"
PLAN_KEYS = (MARKERS_KEY, TIMEOUT_KEY, SECRETS_KEY)


@dataclass(slots=True)
class SubmitRequest:
    """Work to run: a command (shell text or argv) or a workflow (a file path or its text)."""

    kind: ExecutionKind = ExecutionKind.COMMAND
    #: the surface that submits it ("cli", "tui", "monitor", ...)
    source: str = ""
    #: a command: shell text (run with `bash -c`) or an argv (run directly)
    command: str | Sequence[str] | None = None
    #: a workflow: its file, or its text (with `workflow_path` then only naming it)
    workflow_path: str | Path | None = None
    workflow_text: str | None = None
    name: str | None = None
    #: a command runs on one target (default `local`); a workflow's override its own `runs_on`
    targets: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    #: seconds a command may run, then it is stopped and fails with abort reason timeout
    timeout: float | None = None
    #: admission order: higher first, then the oldest
    priority: int = 0
    #: ids other surfaces know it by
    labels: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    tags: Sequence[str] = ()
    metadata: Mapping[str, object] = field(default_factory=dict)
    #: "strict" or "lenient" marker parsing (a command's; a workflow says its own)
    markers: str = "strict"
    #: names of environment variables whose values are masked in everything shown and stored
    secrets: Sequence[str] = ()
    rerun_of: str | None = None
    #: a job (kind JOB, engine.jobs): its fields, for the worker that claims it
    payload: Mapping[str, Any] | None = None
    #: a job: claims allowed before a job whose worker went silent fails
    max_attempts: int = 1
    #: rerun from the failed step: (target, step name) -> id of the execution where it completed
    done_steps: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """A command's target."""
        return self.targets[0] if self.targets else "local"


@dataclass(slots=True)
class Planned:
    """An execution ready to be admitted: its record, its initial steps, and how to run it."""

    execution: Execution
    steps: list[Step]
    plan: ExecutionPlan
    masker: Masker
    #: targets the workflow itself defines (name -> config)
    workflow_targets: Mapping[str, Any] = field(default_factory=dict)


def check_request(request: SubmitRequest) -> None:
    """What every request must hold, whatever its kind."""
    if isinstance(request.priority, bool) or not isinstance(request.priority, int):
        raise InvalidRequest(f"priority must be an integer, not {request.priority!r}")
    if request.kind is ExecutionKind.COMMAND:
        if request.command is None:
            raise InvalidRequest("a command request needs a command")
        if len(request.targets) > 1:
            raise InvalidRequest("a command runs on one target")
    elif request.kind is ExecutionKind.WORKFLOW:
        if request.workflow_path is None and request.workflow_text is None:
            raise InvalidRequest("a workflow needs a file path or its text")
    elif request.kind is ExecutionKind.JOB:
        if request.payload is None:
            raise InvalidRequest("a job request needs its fields (payload)")
    else:
        raise InvalidRequest(f"this engine runs commands, workflows and jobs, not {request.kind.value!r}")


def plan_command(request: SubmitRequest, *, user: str, kill_grace: float,
                 check_target: Callable[[str], None]) -> Planned:
    """Validate a command request and make its execution, branch and plan (nothing runs)."""
    command = request.command
    argv: list[str] | None = None
    script: str | None = None
    if isinstance(command, str):
        if not command.strip():
            raise InvalidRequest("the command is empty")
        script = command
        command_text = command
    else:
        if not command:
            raise InvalidRequest("the command is empty")
        argv = list(command)
        command_text = shlex.join(argv)
    markers = request.markers
    if markers not in ("strict", "lenient"):
        raise InvalidRequest(f"markers must be 'strict' or 'lenient', not {markers!r}")
    timeout = request.timeout
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not math.isfinite(timeout) or timeout <= 0):
        raise InvalidRequest(f"timeout must be a positive number of seconds, not {timeout!r}")
    target = request.target
    check_target(target)
    workdir = _expand_home(request.cwd) if request.cwd else os.getcwd()
    env_map = {str(k): str(v) for k, v in request.env.items()}
    check_spawnable(command_text, workdir, env_map)
    secrets = list(request.secrets)
    masker = Masker([env_map.get(k) or os.environ.get(k, "") for k in secrets])
    # what is shown and stored is UTF-8 (bytes that were not: U+FFFD); the process gets the
    # command, directory and environment as given (see engine.surrogates)
    shown = replace_surrogates(command_text)
    execution = Execution(
        id=new_id(),
        name=replace_surrogates(request.name or _default_name(shown)),
        kind=ExecutionKind.COMMAND,
        command=shown,
        working_directory=replace_surrogates(workdir),
        environment=replace_in(masker.mask_env(env_map)),
        user=replace_surrogates(user),
        tags=replace_in(list(request.tags)),
        metadata=replace_in(dict(request.metadata)),
        targets=[target],
        rerun_of=request.rerun_of,
    )
    if markers == "lenient":
        execution.metadata[MARKERS_KEY] = "lenient"
    if timeout is not None:
        execution.metadata[TIMEOUT_KEY] = timeout
    if secrets:
        execution.metadata[SECRETS_KEY] = replace_in(secrets)
    # a branch's index is negative: the steps (what `total_steps` and `current_step_index`
    # count) are indexed from 0, the branches before them
    branch = Step(id=new_id(), execution_id=execution.id, name=target, kind=StepKind.BRANCH,
                  index=-1, target=target)
    spec = CommandSpec(argv=argv, script=script, env=env_map, cwd=workdir, execution_id=execution.id)
    plan = ExecutionPlan(
        branches=[branch],
        steps=[StepPlan(step=branch, branch=branch, spec=spec, timeout=timeout,
                        lenient_markers=markers == "lenient")],
        is_command=True,
        kill_grace=kill_grace,
    )
    return Planned(execution, [branch], plan, masker)


def command_request_of(execution: Execution, *, rerun_of: str | None = None) -> SubmitRequest:
    """The request that runs a stored command execution again (a rerun, or a queued one rebuilt
    at a restart). Secrets are named again: their values come from the engine's environment."""
    meta = execution.metadata
    timeout = meta.get(TIMEOUT_KEY)
    secrets = meta.get(SECRETS_KEY)
    return SubmitRequest(
        kind=ExecutionKind.COMMAND,
        source=execution.source,
        command=execution.command,
        name=execution.name,
        targets=(execution.targets or ["local"])[:1],
        env=execution.environment,
        cwd=execution.working_directory or None,
        timeout=timeout if isinstance(timeout, int | float) and not isinstance(timeout, bool) else None,
        priority=execution.priority,
        labels=execution.labels,
        user=execution.user or None,
        tags=execution.tags,
        metadata={k: v for k, v in meta.items() if k not in PLAN_KEYS},
        markers=str(meta.get(MARKERS_KEY, "strict")),
        secrets=[str(s) for s in secrets] if isinstance(secrets, list) else (),
        rerun_of=rerun_of,
    )


def check_spawnable(command: str, cwd: str, env: Mapping[str, str]) -> None:
    """Refuse, before anything is created, what no process can be started with (it failed later as
    "internal error: embedded null byte", and over SSH it broke the shared connection)."""
    for what, text in (("the command", command), ("the working directory", cwd)):
        if "\x00" in text:
            raise InvalidRequest(f"{what} contains a NUL character")
        if (bad := unencodable(text)) is not None:
            raise InvalidRequest(f"{what} contains a lone surrogate ({bad}), which no process can be given")
    for key, value in env.items():
        if problem := env_name_problem(key):
            raise InvalidRequest(f"environment: {problem}")
        if "\x00" in value:
            raise InvalidRequest(f"environment: the value of {key} contains a NUL character")
        if (bad := unencodable(value)) is not None:
            raise InvalidRequest(f"environment: the value of {replace_surrogates(key)} contains a lone "
                                 f"surrogate ({bad}), which no process can be given")


def _default_name(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else "command"
    return first if len(first) <= 60 else first[:57] + "..."


def _expand_home(path: str) -> str:
    """`~/x` → the home folder's x (no file system access, so fine on the event loop)."""
    if path == "~" or path.startswith("~/"):
        return os.environ.get("HOME", "~") + path[1:]
    return path

"""Loading and validating workflow files (YAML): the public API.

Every mistake in a file is found before anything runs, and all of them are reported at once, each
as `file:line:column: message` pointing at the offending node. The way there: compose the YAML into
nodes, read the nodes into plain values while remembering where each came from
(`engine.workflow.yaml_reader`), validate those values with the pydantic models of `engine.workflow.schema`,
map each error back to its node, and check what a schema cannot say (step names, needs, cycles, target
names: `engine.workflow.graph`) on the same values. Mistakes are `engine.workflow.issues`.

The result is a `Workflow` of frozen dataclasses (`engine.workflow.model`) with the defaults already
applied: a step's `timeout`, `retries`, `shell`, `cwd` and `markers` are the values it runs with.
"""

from __future__ import annotations

import asyncio
import functools
import os
import stat
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from pydantic import ValidationError

from engine.errors import InvalidRequest
from engine.workflow.graph import check_references, topological_order
from engine.workflow.issues import WorkflowError, WorkflowIssue, describe, syntax_issue
from engine.workflow.model import (
    LOCAL,
    Defaults,
    DockerTarget,
    LocalTarget,
    SshTarget,
    Target,
    WorkerTarget,
    Workflow,
    WorkflowStep,
)
from engine.workflow.schema import (
    DockerTargetModel,
    LocalTargetModel,
    SshTargetModel,
    WorkerTargetModel,
    WorkflowModel,
    parse_duration,
    workflow_json_schema,
)
from engine.workflow.yaml_reader import MAX_DOCUMENT_BYTES, UNREADABLE, Reader, compose, decode, too_large

__all__ = [
    "EXTENSION_PREFIX",
    "LOCAL",
    "Defaults",
    "DockerTarget",
    "LocalTarget",
    "SshTarget",
    "WorkerTarget",
    "Target",
    "Workflow",
    "WorkflowError",
    "WorkflowIssue",
    "WorkflowStep",
    "load_workflow",
    "parse_duration",
    "parse_workflow",
    "read_workflow",
    "topological_order",
    "workflow_json_schema",
]

#: seconds `read_workflow` waits for a workflow to be read (a 500-step one takes ~30 ms)
READ_TIMEOUT = 10.0

#: top-level keys starting with this are ignored: a place for YAML anchors (`x-common: &common`)
EXTENSION_PREFIX = "x-"

# engine.targets_file reads a targets file with the workflow's reader, under these former names
_Reader = Reader
_UNREADABLE = UNREADABLE
_describe = describe
_syntax_issue = syntax_issue


def load_workflow(path: str | Path, *, known_targets: Collection[str] = ()) -> Workflow:
    """Read and validate a workflow file. Raises `WorkflowError` listing every mistake.

    `known_targets`: names of targets defined elsewhere (the user's targets file) that
    `runs_on` may name besides the file's own targets and `local`.
    """
    filename = str(path)
    data = read_document(path, filename)
    text = decode(data, filename)
    return parse_workflow(text, filename, known_targets=known_targets, source_path=os.path.abspath(path))


async def read_workflow(
    path: str | Path | None,
    *,
    text: str | None = None,
    known_targets: Collection[str] = (),
    timeout: float = READ_TIMEOUT,
) -> Workflow:
    """`load_workflow(path)`, or `parse_workflow(text)` when given, in a thread: a big or hostile
    document must not stall the event loop (every execution's logs, every API client). After
    `timeout` seconds the caller is answered with a `WorkflowError`; the thread cannot be stopped, so
    the bounds of `engine.workflow.yaml_reader` are what end its work."""
    filename = str(path) if path else "<workflow>"
    if text is not None:
        work = functools.partial(parse_workflow, text, filename, known_targets=known_targets, source_path=path)
    elif path is not None:
        work = functools.partial(load_workflow, path, known_targets=known_targets)
    else:
        raise InvalidRequest("a workflow needs a file path or its text")
    try:
        async with asyncio.timeout(timeout):
            # readers of their own: a flood of documents waits for these two threads, not for the
            # default executor the rest of the engine uses; one not yet started when the time is up
            # is dropped from the queue
            return await asyncio.get_running_loop().run_in_executor(_readers(), work)
    except TimeoutError:
        message = f"reading the workflow took more than {timeout:g} s: gave up"
        raise WorkflowError([WorkflowIssue(filename, 1, 1, message)]) from None


@functools.cache
def _readers() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="workflow-reader")


def parse_workflow(
    text: str,
    filename: str = "<string>",
    *,
    known_targets: Collection[str] = (),
    source_path: str | Path | None = None,
) -> Workflow:
    """Validate a workflow given as text; `filename` is what messages name.

    `source_path`: the file the text came from (say, for a rerun from stored text): relative
    paths resolve against its folder and the name defaults to its stem.
    """
    reader = Reader(filename)
    root = compose(text, filename)
    if root is None:
        raise WorkflowError(
            [WorkflowIssue(filename, 1, 1, "the file is empty: a workflow needs at least 'steps'")]
        )
    if not isinstance(root, yaml.MappingNode):
        value = reader.read(root, ())
        if value is not UNREADABLE:
            message = f"a workflow must be a mapping of keys (name, steps, ...), got {describe(value)}"
            reader.issue(root.start_mark, (), message)
        raise WorkflowError(reader.issues)

    raw = reader.read(root, ())
    for key in [key for key in raw if key.startswith(EXTENSION_PREFIX)]:
        del raw[key]
    model: WorkflowModel | None = None
    try:
        model = WorkflowModel.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            reader.report_validation_error(error, raw)
    check_references(raw, reader, known_targets)
    if reader.issues or model is None:
        raise WorkflowError(sorted(set(reader.issues)))
    return _build(model, reader, filename, None if source_path is None else str(source_path), text)


def read_document(path: str | Path, filename: str) -> bytes:
    """The bytes of a regular file of at most `MAX_DOCUMENT_BYTES`. Raises `WorkflowError`."""
    def refuse(reason: str) -> WorkflowError:
        return WorkflowError([WorkflowIssue(filename, 1, 1, f"cannot read the file: {reason}")])

    try:
        # O_NONBLOCK: a FIFO (or a device) named as a workflow must not block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path (given over the API)
        raise refuse(getattr(exc, "strerror", None) or str(exc)) from None
    with os.fdopen(fd, "rb") as file:
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise refuse("it is a directory")
            if not stat.S_ISREG(info.st_mode):
                raise refuse("not a regular file")
            if info.st_size > MAX_DOCUMENT_BYTES:
                raise too_large(info.st_size, filename)
            data = file.read(MAX_DOCUMENT_BYTES + 1)  # a file that grows meanwhile stops here
        except OSError as exc:
            raise refuse(exc.strerror or str(exc)) from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise too_large(len(data), filename)
    return data


# -- building the result -------------------------------------------------------------------------


def _build(
    model: WorkflowModel, reader: Reader, filename: str, source_path: str | None, text: str
) -> Workflow:
    base = os.path.dirname(source_path) if source_path else None
    d = model.defaults
    defaults = Defaults(
        timeout=d.timeout,
        shell=d.shell,
        cwd=_resolve(d.cwd, base),
        retries=d.retries,
        kill_grace=d.kill_grace,
    )
    steps = [
        WorkflowStep(
            name=step.name,
            run=step.run,
            line=reader.line(("steps", i)),
            description=step.description,
            env=dict(step.env),
            cwd=_resolve(step.cwd, base) if step.cwd is not None else defaults.cwd,
            # an explicit `timeout: null` means no timeout, even when defaults has one
            timeout=step.timeout if "timeout" in step.model_fields_set else defaults.timeout,
            retries=step.retries if step.retries is not None else defaults.retries,
            continue_on_error=step.continue_on_error,
            needs=_unique(step.needs),
            artifacts=list(step.artifacts),
            runs_on=None if step.runs_on is None else _unique(step.runs_on),
            shell=step.shell or defaults.shell,
            markers=step.markers or model.markers,
        )
        for i, step in enumerate(model.steps)
    ]
    targets: dict[str, Target] = {LOCAL: LocalTarget()}
    for name, target in model.targets.items():
        targets[name] = _target(name, target, base)
    return Workflow(
        name=model.name or _default_name(filename, source_path),
        description=model.description,
        env=dict(model.env),
        secrets=_unique(model.secrets),
        targets=targets,
        runs_on=_unique(model.runs_on),
        defaults=defaults,
        steps=steps,
        markers=model.markers,
        max_parallel=model.max_parallel,
        max_parallel_targets=model.max_parallel_targets,
        fail_fast=model.fail_fast,
        allow_failed_targets=model.allow_failed_targets,
        source_path=source_path,
        source_text=text,
    )


def _target(
    name: str, target: LocalTargetModel | SshTargetModel | DockerTargetModel | WorkerTargetModel, base: str | None
) -> Target:
    if isinstance(target, WorkerTargetModel):
        return WorkerTarget(name=name, pool=target.pool)
    if isinstance(target, SshTargetModel):
        return SshTarget(
            name=name,
            host=target.host,
            user=target.user,
            port=target.port,
            key=_resolve(target.key, base),
            password_env=target.password_env,
            known_hosts=_resolve(target.known_hosts, base),
            # null turns checking off; left out, ~/.ssh/config or ~/.ssh/known_hosts is used
            check_host_keys=target.known_hosts is not None or "known_hosts" not in target.model_fields_set,
            trust_on_first_use=target.trust_on_first_use,
            jump_host=target.jump_host,
            connect_timeout=target.connect_timeout,
        )
    if isinstance(target, DockerTargetModel):
        return DockerTarget(
            name=name,
            image=target.image,
            docker_host=target.docker_host,
            volumes=list(target.volumes),
            cpus=target.cpus,
            memory=target.memory,
            workdir=target.workdir,
            reuse=target.reuse,
            keep=target.keep,
            pull=target.pull,
        )
    return LocalTarget(name=name)


def _resolve(path: str | None, base: str | None) -> str | None:
    """A path of the file made absolute against the file's folder; `~/...` and absolute paths,
    and every path of a text that came from no file, are kept as written."""
    if path is None or base is None or path.startswith("~") or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def _default_name(filename: str, source_path: str | None) -> str:
    if source_path:
        return Path(source_path).stem
    if filename and not filename.startswith("<"):
        return Path(filename).stem
    return "workflow"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))

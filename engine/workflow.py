"""Loading and validating workflow files (YAML).

Every mistake in a file is found before anything runs, and all of them are reported at once, each
as `file:line:column: message` pointing at the offending node. The way there: compose the YAML into
nodes, read the nodes into plain values while remembering where each came from, validate those
values with the pydantic models of `engine.workflow_schema`, map each error back to its node, and
check what a schema cannot say (step names, needs, cycles, target names) on the same values.

The result is a `Workflow` of frozen dataclasses with the defaults already applied: a step's
`timeout`, `retries`, `shell`, `cwd` and `markers` are the values it runs with.
"""

from __future__ import annotations

import difflib
import heapq
import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from engine.errors import InvalidRequest
from engine.workflow_schema import (
    TARGET_MODELS,
    TARGET_TYPES,
    DefaultsModel,
    DockerTargetModel,
    LocalTargetModel,
    SshTargetModel,
    StepModel,
    WorkflowModel,
    parse_duration,
    workflow_json_schema,
)

__all__ = [
    "EXTENSION_PREFIX",
    "LOCAL",
    "Defaults",
    "DockerTarget",
    "LocalTarget",
    "SshTarget",
    "Target",
    "Workflow",
    "WorkflowError",
    "WorkflowIssue",
    "WorkflowStep",
    "load_workflow",
    "parse_duration",
    "parse_workflow",
    "topological_order",
    "workflow_json_schema",
]

#: the target every workflow has, whether its file names it or not
LOCAL = "local"

Markers = Literal["strict", "lenient"]

#: top-level keys starting with this are ignored: a place for YAML anchors (`x-common: &common`)
EXTENSION_PREFIX = "x-"


# -- issues -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class WorkflowIssue:
    """One mistake in a workflow file; `line` and `column` are 1-based."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class WorkflowError(InvalidRequest):
    """A workflow file that cannot run; `issues` holds every mistake found, in file order."""

    title = "Invalid workflow"

    def __init__(self, issues: Iterable[WorkflowIssue]) -> None:
        self.issues: list[WorkflowIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.issues,))


# -- the workflow ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalTarget:
    name: str = LOCAL
    type: Literal["local"] = field(default="local", init=False)


@dataclass(frozen=True, slots=True)
class SshTarget:
    name: str
    host: str
    user: str | None = None
    port: int = 22
    #: private key file (relative paths already resolved against the workflow file's folder)
    key: str | None = None
    #: name of an environment variable holding the password
    password_env: str | None = None
    #: None: do not check host keys
    known_hosts: str | None = "~/.ssh/known_hosts"
    trust_on_first_use: bool = False
    jump_host: str | None = None
    connect_timeout: float = 10.0
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


Target = LocalTarget | SshTarget | DockerTarget


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


def topological_order(workflow: Workflow) -> list[str]:
    """Step names, each after every step it needs; among steps free to go, file order first."""
    index = {step.name: i for i, step in enumerate(workflow.steps)}
    waiting_on = {step.name: {n for n in step.needs if n in index} for step in workflow.steps}
    dependents: dict[str, list[str]] = {name: [] for name in index}
    for name, needs in waiting_on.items():
        for need in needs:
            dependents[need].append(name)
    ready = [index[name] for name, needs in waiting_on.items() if not needs]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = workflow.steps[heapq.heappop(ready)].name
        order.append(name)
        for dependent in dependents[name]:
            waiting_on[dependent].discard(name)
            if not waiting_on[dependent]:
                heapq.heappush(ready, index[dependent])
    if len(order) < len(index):
        stuck = [name for name in index if name not in order]
        raise ValueError(f"the needs of these steps form a cycle: {', '.join(stuck)}")
    return order


# -- loading -----------------------------------------------------------------------------------


def load_workflow(path: str | Path, *, known_targets: Collection[str] = ()) -> Workflow:
    """Read and validate a workflow file. Raises `WorkflowError` listing every mistake.

    `known_targets`: names of targets defined elsewhere (the user's targets file) that
    `runs_on` may name besides the file's own targets and `local`.
    """
    filename = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WorkflowError([WorkflowIssue(filename, 1, 1, f"cannot read the file: {reason}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        message = f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})"
        raise WorkflowError([WorkflowIssue(filename, line, column, message)]) from None
    return parse_workflow(text, filename, known_targets=known_targets, source_path=os.path.abspath(path))


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
    reader = _Reader(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise WorkflowError([_syntax_issue(filename, exc)]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"invalid YAML: character #x{exc.character:04x} is not allowed"
        raise WorkflowError([WorkflowIssue(filename, line, column, message)]) from None

    if root is None:
        raise WorkflowError(
            [WorkflowIssue(filename, 1, 1, "the file is empty: a workflow needs at least 'steps'")]
        )
    if not isinstance(root, yaml.MappingNode):
        value = reader.read(root, ())
        if value is not _UNREADABLE:
            message = f"a workflow must be a mapping of keys (name, steps, ...), got {_describe(value)}"
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
    _check_references(raw, reader, known_targets)
    if reader.issues or model is None:
        raise WorkflowError(sorted(set(reader.issues)))
    return _build(model, reader, filename, None if source_path is None else str(source_path), text)


# -- reading nodes --------------------------------------------------------------------------------

Loc = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
# what the reader returns for a node it already reported; validation errors about it are dropped
_UNREADABLE = object()
# YAML scalars read as numbers or booleans; in `env` the text as written is kept instead
_TYPED_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{kind}" for kind in ("int", "float", "bool"))


@dataclass(frozen=True, slots=True)
class _Where:
    value: yaml.Node
    #: the key node, for a mapping's value
    key: yaml.Node | None = None


class _Reader:
    """Turns YAML nodes into plain values and remembers the node each value came from."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.where: dict[Loc, _Where] = {}
        self.issues: list[WorkflowIssue] = []
        self._constructor = yaml.SafeLoader("")
        self._open: set[int] = set()

    def issue(self, mark: yaml.Mark, loc: Loc, message: str) -> None:
        text = f"{_format_loc(loc)}: {message}" if loc else message
        self.issues.append(WorkflowIssue(self.filename, mark.line + 1, mark.column + 1, text))

    def line(self, loc: Loc) -> int:
        return self.where[loc].value.start_mark.line + 1

    def read(self, node: yaml.Node, loc: Loc, key: yaml.Node | None = None) -> Any:
        self.where[loc] = _Where(node, key)
        if isinstance(node, yaml.ScalarNode):
            if node.tag in _TYPED_SCALAR_TAGS and _keeps_text(loc):
                return node.value
            try:
                return self._constructor.construct_object(node, deep=True)
            except yaml.constructor.ConstructorError as exc:
                if node.tag.startswith("!"):
                    self.issue(node.start_mark, loc, f"unsupported YAML tag '{node.tag}'")
                else:
                    self.issue(node.start_mark, loc, f"invalid value: {exc.problem}")
                return _UNREADABLE
        if id(node) in self._open:
            self.issue(node.start_mark, loc, "a YAML alias refers to a node that contains it")
            return _UNREADABLE
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.read(item, (*loc, i)) for i, item in enumerate(node.value)]
            return {
                name: self.read(value, (*loc, name), key_node)
                for name, (key_node, value) in self._entries(node, loc).items()
            }
        finally:
            self._open.discard(id(node))

    def _entries(self, node: yaml.MappingNode, loc: Loc) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The mapping's entries by key, with `<<` merge keys applied (explicit keys win)."""
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merged: list[dict[str, tuple[yaml.Node, yaml.Node]]] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, yaml.MappingNode) and id(source) not in self._open:
                        self._open.add(id(source))
                        try:
                            merged.append(self._entries(source, loc))
                        finally:
                            self._open.discard(id(source))
                    else:
                        self.issue(source.start_mark, loc, "'<<' merges mappings only")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.issue(key_node.start_mark, loc, "a key must be a plain string, not a list or a mapping")
                continue
            name = key_node.value
            if name in entries:
                first = entries[name][0].start_mark.line + 1
                self.issue(key_node.start_mark, loc, f"duplicate key '{name}' (first on line {first})")
                continue
            entries[name] = (key_node, value_node)
        for source_entries in merged:
            for name, entry in source_entries.items():
                entries.setdefault(name, entry)
        return entries

    def mark(self, loc: Loc, *, key: bool = False) -> yaml.Mark:
        """Where `loc` is in the file: its key or its value, else its nearest enclosing node."""
        while loc not in self.where and loc:
            loc, key = loc[:-1], False
        where = self.where.get(loc)
        if where is None:
            return yaml.Mark(self.filename, 0, 0, 0, None, None)
        if key and where.key is not None:
            return where.key.start_mark
        return where.value.start_mark

    # -- pydantic errors -------------------------------------------------------------------------

    def report_validation_error(self, error: Mapping[str, Any], raw: dict[str, Any]) -> None:
        if error.get("input") is _UNREADABLE:
            return
        loc = _without_union_tags(tuple(error["loc"]))
        kind = error["type"]
        ctx = error.get("ctx") or {}
        value = error.get("input")
        if loc and loc[-1] == "[key]":
            key_loc = loc[:-1]
            self.issue(self.mark(key_loc, key=True), key_loc[:-1], _error_text(error, key_loc))
        elif kind == "missing":
            self.issue(self.mark(loc[:-1]), loc[:-1], f"missing required key '{loc[-1]}'")
        elif kind == "extra_forbidden":
            name = str(loc[-1])
            hint = _did_you_mean(name, _allowed_keys(loc[:-1], raw))
            self.issue(self.mark(loc, key=True), loc[:-1], f"unknown key '{name}'{hint}")
        elif kind == "union_tag_not_found":
            types = ", ".join(f"'{t}'" for t in TARGET_TYPES)
            self.issue(self.mark(loc), loc, f"missing required key 'type' (one of {types})")
        elif kind == "union_tag_invalid":
            tag = str(ctx.get("tag", value))
            types = ", ".join(f"'{t}'" for t in TARGET_TYPES)
            hint = _did_you_mean(tag, TARGET_TYPES)
            message = f"unknown target type '{tag}'{hint}; expected one of {types}"
            self.issue(self.mark((*loc, "type")), (*loc, "type"), message)
        else:
            self.issue(self.mark(loc), loc, _error_text(error, loc))


def _keeps_text(loc: Loc) -> bool:
    """An `env` value (workflow's or a step's): keep "0755", "yes", "1.10" as written."""
    return (len(loc) == 2 and loc[0] == "env") or (len(loc) == 4 and loc[0] == "steps" and loc[2] == "env")


def _without_union_tags(loc: Loc) -> Loc:
    # pydantic puts the discriminator's value in the path of a target's errors:
    # ("targets", "web1", "ssh", "port") is the file's targets.web1.port
    if len(loc) >= 3 and loc[0] == "targets" and loc[2] in TARGET_TYPES:
        return loc[:2] + loc[3:]
    return loc


def _allowed_keys(loc: Loc, raw: Any) -> list[str]:
    if loc == ():
        return list(WorkflowModel.model_fields)
    if loc == ("defaults",):
        return list(DefaultsModel.model_fields)
    if len(loc) == 2 and loc[0] == "steps":
        return list(StepModel.model_fields)
    if len(loc) == 2 and loc[0] == "targets":
        target = raw.get("targets", {}).get(loc[1]) if isinstance(raw.get("targets"), dict) else None
        kind = target.get("type") if isinstance(target, dict) else None
        if kind in TARGET_MODELS:
            return list(TARGET_MODELS[kind].model_fields)
        return sorted({name for model in TARGET_MODELS.values() for name in model.model_fields})
    return []


_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _error_text(error: Mapping[str, Any], loc: Loc) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        hint = _did_you_mean(value, choices) if isinstance(value, str) else ""
        return f"expected {ctx.get('expected')}, got {_describe(value)}{hint}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {
            "greater_than_equal": f"at least {_describe(ctx.get('ge'))}",
            "greater_than": f"greater than {_describe(ctx.get('gt'))}",
            "less_than_equal": f"at most {_describe(ctx.get('le'))}",
            "less_than": f"less than {_describe(ctx.get('lt'))}",
        }[kind]
        return f"must be {bound}, got {_describe(value)}"
    if kind == "too_short":
        return "at least one step is required" if loc == ("steps",) else "must not be empty"
    if kind == "string_too_short":
        return "must not be empty"
    return str(error["msg"])


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, date):
        return f"a date ({value.isoformat()}; quote it to make it a string)"
    return f"a {type(value).__name__}"


def _did_you_mean(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _syntax_issue(filename: str, exc: yaml.MarkedYAMLError) -> WorkflowIssue:
    mark = exc.problem_mark or exc.context_mark
    message = f"invalid YAML: {exc.problem or exc.context or 'cannot parse'}"
    if exc.context and exc.problem and exc.problem.startswith("but "):
        # "expected a single document in the stream" + "but found another document"
        message = f"invalid YAML: {exc.context}, {exc.problem}"
    elif exc.context and exc.problem:
        message += f" ({exc.context}"
        if exc.context_mark is not None and exc.context_mark is not mark:
            message += f" at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1}"
        message += ")"
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return WorkflowIssue(filename, line, column, message)


# -- checks a schema cannot express ---------------------------------------------------------------


def _strings(value: Any, loc: Loc) -> list[tuple[str, Loc]]:
    """The names in a "string or list of strings" value, with where each is."""
    if isinstance(value, str):
        return [(value, loc)] if value.strip() else []
    if isinstance(value, list):
        return [(item, (*loc, i)) for i, item in enumerate(value) if isinstance(item, str) and item.strip()]
    return []


def _check_references(raw: dict[str, Any], reader: _Reader, known_targets: Collection[str]) -> None:
    """Step names, needs, cycles and target names, on the values as read (valid or not), so that
    these mistakes are reported together with the schema's."""
    steps: list[Any] = raw["steps"] if isinstance(raw.get("steps"), list) else []
    index: dict[str, int] = {}
    for i, step in enumerate(steps):
        name = step.get("name") if isinstance(step, dict) else None
        if not isinstance(name, str) or not name.strip():
            continue
        if name in index:
            first = reader.line(("steps", index[name], "name"))
            reader.issue(
                reader.mark(("steps", i, "name")),
                ("steps", i, "name"),
                f"duplicate step name '{name}' (first on line {first})",
            )
        else:
            index[name] = i

    # needs: name -> [(needed name, where it is written)]
    needs: dict[str, list[tuple[str, Loc]]] = {name: [] for name in index}
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        own = step.get("name")
        for need, loc in _strings(step.get("needs"), ("steps", i, "needs")):
            if need == own:
                reader.issue(reader.mark(loc), ("steps", i, "needs"), f"step '{own}' needs itself")
            elif need not in index:
                hint = _did_you_mean(need, index)
                reader.issue(reader.mark(loc), ("steps", i, "needs"), f"unknown step '{need}'{hint}")
            elif isinstance(own, str) and index.get(own) == i:
                needs[own].append((need, loc))
    _check_cycles(needs, index, reader)

    targets: dict[str, Any] = raw["targets"] if isinstance(raw.get("targets"), dict) else {}
    local = targets.get(LOCAL)
    if isinstance(local, dict) and local.get("type") in TARGET_MODELS and local.get("type") != "local":
        reader.issue(
            reader.mark(("targets", LOCAL), key=True),
            ("targets",),
            f"'{LOCAL}' is the built-in local target; give this {local['type']} target another name",
        )
    known = {LOCAL, *targets, *known_targets}
    holders: list[tuple[Loc, Any]] = [((), raw), *((("steps", i), step) for i, step in enumerate(steps))]
    for holder, values in holders:
        if not isinstance(values, dict):
            continue
        where: Loc = (*holder, "runs_on")
        for target, loc in _strings(values.get("runs_on"), where):
            if target not in known:
                reader.issue(
                    reader.mark(loc), where, f"unknown target '{target}'{_did_you_mean(target, known)}"
                )


def _check_cycles(needs: dict[str, list[tuple[str, Loc]]], index: dict[str, int], reader: _Reader) -> None:
    """One message per group of steps that need one another (a strongly connected component),
    showing the shortest cycle through the group's first step in the file."""
    needed_by: dict[str, set[str]] = {name: set() for name in needs}
    for name, edges in needs.items():
        for need, _ in edges:
            needed_by[need].add(name)

    def reachable(start: str, edges: Mapping[str, Iterable[str]]) -> set[str]:
        seen: set[str] = set()
        todo = list(edges[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(edges[name])
        return seen

    successors = {name: [need for need, _ in edges] for name, edges in needs.items()}
    reported: set[str] = set()
    for start in sorted(needs, key=index.__getitem__):
        if start in reported:
            continue
        ahead = reachable(start, successors)
        if start not in ahead:
            continue
        group = (ahead & reachable(start, needed_by)) | {start}
        reported |= group
        # shortest way back to `start`, breadth first, inside the group
        came_from: dict[str, str] = {}
        frontier = [start]
        while start not in came_from:
            following: list[str] = []
            for name in frontier:
                for need in successors[name]:
                    if need in group and need not in came_from:
                        came_from[need] = name
                        following.append(need)
            frontier = following
        cycle = [start]
        while len(cycle) == 1 or cycle[-1] != start:
            cycle.append(came_from[cycle[-1]])
        cycle.reverse()
        loc = next(loc for need, loc in needs[start] if need == cycle[1])
        reader.issue(reader.mark(loc), ("steps", index[start], "needs"), f"cycle: {' -> '.join(cycle)}")


# -- building the result -------------------------------------------------------------------------


def _build(
    model: WorkflowModel, reader: _Reader, filename: str, source_path: str | None, text: str
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
    name: str, target: LocalTargetModel | SshTargetModel | DockerTargetModel, base: str | None
) -> Target:
    if isinstance(target, SshTargetModel):
        return SshTarget(
            name=name,
            host=target.host,
            user=target.user,
            port=target.port,
            key=_resolve(target.key, base),
            password_env=target.password_env,
            known_hosts=_resolve(target.known_hosts, base),
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

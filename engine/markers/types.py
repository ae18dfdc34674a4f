"""The markers a line of output can hold: dataclasses, one per kind, whatever the dialect (frozen, but
the two made for every marker step, which are not: see there)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: the dialects a marker can come from (StepOpened.dialect, StepClosed.dialect)
DIALECTS = ("stepflow", "github", "gitlab", "teamcity", "azure", "buildkite")


# not frozen: one is made for each marker, in half the time; nothing changes it
@dataclass(slots=True)
class StepOpened:
    name: str
    #: every parameter given with the marker, values converted to bool/int/float where they parse
    params: dict[str, object] = field(default_factory=dict)
    stop_on_error: bool = False
    #: seconds
    estimated_duration: float | None = None
    dialect: str = "stepflow"
    #: what a closing marker names to close this one: GitLab's section name, TeamCity's block name
    key: str | None = None
    #: the group is the one to show expanded (Buildkite ``+++``)
    expanded: bool = False


# not frozen: one is made for each marker, in half the time; nothing changes it
@dataclass(slots=True)
class StepClosed:
    #: the step (StepFlow), section (GitLab) or block (TeamCity) to close; None: the open one
    name: str | None
    dialect: str = "stepflow"


@dataclass(frozen=True, slots=True)
class StepErrored:
    """``STEP_ERROR:`` or TeamCity ``buildProblem``: the open step fails."""

    message: str


@dataclass(frozen=True, slots=True)
class ArtifactDeclared:
    #: as printed: relative paths are resolved later, against the command's working directory
    path: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class MetaSet:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class ProgressReported:
    #: 0..100; computed from done/total when those are given
    percent: float | None = None
    done: int | None = None
    total: int | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Annotated:
    """An annotation on the open step: GitHub ``::error`` & co, Azure ``logissue``, TeamCity ``message``."""

    #: "error", "warning", "notice" or "debug"
    level: str
    message: str
    file: str | None = None
    line: int | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class MaskAdded:
    """A value to mask from now on (GitHub ``::add-mask::``, Azure ``task.setsecret``)."""

    value: str


Marker = (
    StepOpened
    | StepClosed
    | StepErrored
    | ArtifactDeclared
    | MetaSet
    | ProgressReported
    | Annotated
    | MaskAdded
)

"""Events: what happened, in the past tense. They come up from the engine through one subscription.

Execution and step events carry a snapshot (a copy) of the object after the change, so every
subscriber (store writer, TUI, WebSocket hub) can apply them without asking back.
Coalescable events (log lines, progress, resource samples) may be dropped for a lagging
non-lossless subscriber; status events never are.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from engine.model import Artifact, Execution, LogLine, Step, Stream


@dataclass(slots=True, frozen=True)
class Event:
    #: events a lagging subscriber may lose (the store writer never loses any)
    coalescable = False

    @property
    def execution_id(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(slots=True, frozen=True)
class ExecutionCreated(Event):
    execution: Execution
    #: the tree known at creation: branches and workflow steps, all pending
    steps: tuple[Step, ...] = ()

    @property
    def execution_id(self) -> str:
        return self.execution.id


@dataclass(slots=True, frozen=True)
class ExecutionStarted(Event):
    execution: Execution

    @property
    def execution_id(self) -> str:
        return self.execution.id


@dataclass(slots=True, frozen=True)
class ExecutionUpdated(Event):
    """Counters, progress or metadata changed (not the status)."""

    execution: Execution
    coalescable = True

    @property
    def execution_id(self) -> str:
        return self.execution.id


@dataclass(slots=True, frozen=True)
class ExecutionFinished(Event):
    execution: Execution

    @property
    def execution_id(self) -> str:
        return self.execution.id


@dataclass(slots=True, frozen=True)
class ExecutionDeleted(Event):
    id: str

    @property
    def execution_id(self) -> str:
        return self.id


@dataclass(slots=True, frozen=True)
class StepAdded(Event):
    """A step appeared after creation (a marker step, or a retry's attempt)."""

    step: Step

    @property
    def execution_id(self) -> str:
        return self.step.execution_id


@dataclass(slots=True, frozen=True)
class StepStarted(Event):
    step: Step

    @property
    def execution_id(self) -> str:
        return self.step.execution_id


@dataclass(slots=True, frozen=True)
class StepUpdated(Event):
    """Progress, metadata, description or resource usage changed (not the status)."""

    step: Step
    coalescable = True

    @property
    def execution_id(self) -> str:
        return self.step.execution_id


@dataclass(slots=True, frozen=True)
class StepFinished(Event):
    step: Step

    @property
    def execution_id(self) -> str:
        return self.step.execution_id


@dataclass(slots=True, frozen=True)
class LinesLogged(Event):
    """Consecutive lines of one stream of one step, numbered start_seq, start_seq+1, ..."""

    exec_id: str
    step_id: str | None
    stream: Stream
    start_seq: int
    timestamp: datetime
    lines: tuple[str, ...]
    coalescable = True

    @property
    def execution_id(self) -> str:
        return self.exec_id

    def log_lines(self) -> list[LogLine]:
        return [
            LogLine(self.exec_id, self.step_id, self.start_seq + i, self.stream, self.timestamp, text)
            for i, text in enumerate(self.lines)
        ]


@dataclass(slots=True, frozen=True)
class ArtifactAdded(Event):
    artifact: Artifact

    @property
    def execution_id(self) -> str:
        return self.artifact.execution_id


@dataclass(slots=True, frozen=True)
class ArtifactDeleted(Event):
    exec_id: str
    artifact_id: str

    @property
    def execution_id(self) -> str:
        return self.exec_id


@dataclass(slots=True, frozen=True)
class Notice(Event):
    """A message for people watching (a warning, an annotation, a refused artifact)."""

    exec_id: str
    step_id: str | None
    level: str
    message: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def execution_id(self) -> str:
        return self.exec_id


@dataclass(slots=True, frozen=True)
class LinesDropped(Event):
    """Sent to a lagging subscriber in place of the log lines it lost."""

    exec_id: str
    count: int

    @property
    def execution_id(self) -> str:
        return self.exec_id


# -- the events a command printing markers makes by the thousand a second -----------------------------
# Made as their __init__ makes them, field by field, through the fields' slots: a frozen dataclass's
# __init__ goes through object.__setattr__ for each field, twice the work. The same objects (equal,
# same type), for the engine's hot path only.
_new = object.__new__


def _slot_setter(cls: type, name: str) -> Any:
    """What sets field `name` of a `cls` (its slot's descriptor), bypassing the frozen __setattr__."""
    return cls.__dict__[name].__set__


_set_added_step = _slot_setter(StepAdded, "step")
_set_finished_step = _slot_setter(StepFinished, "step")
_LINES_FIELDS = ("exec_id", "step_id", "stream", "start_seq", "timestamp", "lines")
_set_lines_fields = tuple(_slot_setter(LinesLogged, name) for name in _LINES_FIELDS)


def step_added(step: Step) -> StepAdded:
    """`StepAdded(step)`, made faster."""
    event = _new(StepAdded)
    _set_added_step(event, step)
    return event


def step_finished(step: Step) -> StepFinished:
    """`StepFinished(step)`, made faster."""
    event = _new(StepFinished)
    _set_finished_step(event, step)
    return event


def lines_logged(
    exec_id: str, step_id: str | None, stream: Stream, start_seq: int, timestamp: datetime,
    lines: tuple[str, ...],
) -> LinesLogged:
    """`LinesLogged(...)` by position, made faster."""
    event = _new(LinesLogged)
    set_exec_id, set_step_id, set_stream, set_start_seq, set_timestamp, set_lines = _set_lines_fields
    set_exec_id(event, exec_id)
    set_step_id(event, step_id)
    set_stream(event, stream)
    set_start_seq(event, start_seq)
    set_timestamp(event, timestamp)
    set_lines(event, lines)
    return event


assert tuple(f.name for f in fields(LinesLogged)) == _LINES_FIELDS

"""The newest state of recently active executions, as the events told it.

Reads from the store can lag the events (the store writer commits in batches), and events that
came before a screen opened were not seen by it. Screens merge what they read with this cache:
an object here is at least as new as the store's copy.

A command may print millions of marker steps: an execution keeps its open steps, its workflow steps
and branches, and only the latest KEEP_FINISHED finished marker steps (enough to cover a read racing
the events; the engine's own reads hold every step, finished ones from the store).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

from engine.events import (
    ArtifactAdded,
    ArtifactDeleted,
    Event,
    ExecutionCreated,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
    LinesLogged,
    StepAdded,
    StepFinished,
    StepStarted,
    StepUpdated,
)
from engine.model import Artifact, Execution, Step, StepKind

KEEP = 200
#: finished marker steps kept per execution, the latest
KEEP_FINISHED = 2_000


@dataclass(slots=True)
class LiveExecution:
    execution: Execution | None = None
    steps: dict[str, Step] = field(default_factory=dict)
    #: step id -> seq of the last line the events showed for it
    last_seq: dict[str | None, int] = field(default_factory=dict)
    #: artifacts the events told of (the store commits them a moment later), and those deleted
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    deleted_artifacts: set[str] = field(default_factory=set)
    #: ids of the finished marker steps kept in `steps`, oldest first
    finished_markers: deque[str] = field(default_factory=deque)

    def keep(self, step: Step) -> None:
        previous = self.steps.get(step.id)
        self.steps[step.id] = step
        if step.kind is not StepKind.MARKER or not step.status.is_terminal or (
            previous is not None and previous.status.is_terminal  # counted already
        ):
            return
        self.finished_markers.append(step.id)
        if len(self.finished_markers) > KEEP_FINISHED:
            old = self.finished_markers.popleft()
            self.steps.pop(old, None)
            self.last_seq.pop(old, None)

    def seen_seq(self, step_ids: list[str] | None) -> int:
        if step_ids is None:
            return max(self.last_seq.values(), default=-1)
        return max((self.last_seq.get(s, -1) for s in step_ids), default=-1)


class LiveCache:
    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._items: OrderedDict[str, LiveExecution] = OrderedDict()

    def get(self, execution_id: str) -> LiveExecution | None:
        return self._items.get(execution_id)

    def _entry(self, execution_id: str) -> LiveExecution:
        entry = self._items.get(execution_id)
        if entry is None:
            entry = self._items[execution_id] = LiveExecution()
            while len(self._items) > self.keep:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(execution_id)
        return entry

    def apply(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, ExecutionCreated):
                entry = self._entry(ev.execution.id)
                entry.execution = ev.execution
                for step in ev.steps:
                    entry.steps[step.id] = step
            elif isinstance(ev, ExecutionStarted | ExecutionUpdated | ExecutionFinished):
                self._entry(ev.execution.id).execution = ev.execution
            elif isinstance(ev, StepAdded | StepStarted | StepUpdated | StepFinished):
                self._entry(ev.step.execution_id).keep(ev.step)
            elif isinstance(ev, LinesLogged) and ev.lines:
                self._entry(ev.exec_id).last_seq[ev.step_id] = ev.start_seq + len(ev.lines) - 1
            elif isinstance(ev, ArtifactAdded):
                entry = self._entry(ev.artifact.execution_id)
                entry.artifacts[ev.artifact.id] = ev.artifact
                entry.deleted_artifacts.discard(ev.artifact.id)
            elif isinstance(ev, ArtifactDeleted):
                entry = self._entry(ev.exec_id)
                entry.artifacts.pop(ev.artifact_id, None)
                entry.deleted_artifacts.add(ev.artifact_id)
            elif isinstance(ev, ExecutionDeleted):
                self._items.pop(ev.id, None)

    def newest(self, execution: Execution) -> Execution:
        entry = self._items.get(execution.id)
        return entry.execution if entry is not None and entry.execution is not None else execution

"""Admission: pending executions wait here, ordered by priority (higher first) then age, and leave
when the engine has room for them (fewer than `max_running` run).

The engine owns the queue and does the starting (`Engine._admit_waiting`); this module holds the order.
`queue_places` (engine.queue_order, which imports none of the engine) computes the same order from
stored rows, for readers in another process (`stepflow ls`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from datetime import datetime

from engine.execution.state import ExecutionState
from engine.hub import Hub
from engine.model import (
    AbortReason,
    Execution,
    ExecutionStatus,
    StepKind,
    StepStatus,
)
from engine.queue_order import (  # noqa: F401 - where they were, for the engine's readers
    ExecutionLister,
    admission_key,
    is_queued,
    queue_places,
    stored_queue,
)
from engine.submission import Planned

#: the label naming an execution's admission group: at most the group's limit of its executions
#: run at once (a RustCI runner's `max_concurrent_jobs`; 0, or no limit set, holds them in the queue)
GROUP_LABEL = "admission_group"


class AdmissionQueue:
    """The executions waiting for room, by (-priority, created_at, arrival)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, datetime, int, str]] = []
        self._waiting: dict[str, Planned] = {}
        self._arrival = itertools.count()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._waiting

    def push(self, planned: Planned) -> None:
        execution = planned.execution
        self._waiting[execution.id] = planned
        heapq.heappush(self._heap, (*admission_key(execution), next(self._arrival), execution.id))

    def pop(self, admissible: Callable[[Execution], bool] | None = None) -> Planned | None:
        """The next to start (the next `admissible` one, when given), or None when none waits."""
        passed: list[tuple[int, datetime, int, str]] = []
        try:
            while self._heap:
                entry = heapq.heappop(self._heap)
                planned = self._waiting.get(entry[-1])
                if planned is None:  # removed (cancelled) while it waited
                    continue
                if admissible is not None and not admissible(planned.execution):
                    passed.append(entry)
                    continue
                del self._waiting[entry[-1]]
                return planned
            return None
        finally:
            for entry in passed:
                heapq.heappush(self._heap, entry)

    def remove(self, execution_id: str) -> Planned | None:
        """Take one out of the queue (cancel); its heap entry is skipped when it comes up."""
        return self._waiting.pop(execution_id, None)

    def get(self, execution_id: str) -> Planned | None:
        return self._waiting.get(execution_id)

    def drain(self) -> list[Planned]:
        """Everything still waiting, in queue order, leaving the queue empty."""
        ordered = sorted(self._waiting.values(), key=lambda p: admission_key(p.execution))
        self._waiting.clear()
        self._heap.clear()
        return ordered

    def place(self, execution_id: str) -> int | None:
        """1 for the next to start; None when it does not wait here."""
        planned = self._waiting.get(execution_id)
        if planned is None:
            return None
        key = admission_key(planned.execution)
        return 1 + sum(1 for p in self._waiting.values() if admission_key(p.execution) < key)


class AdmissionGroups:
    """Limits of running executions per admission group (`GROUP_LABEL`), and how many run."""

    def __init__(self) -> None:
        self._limits: dict[str, int] = {}
        self._running: dict[str, int] = {}

    def set_limit(self, group: str, limit: int | None) -> None:
        if limit is None:
            self._limits.pop(group, None)
        else:
            self._limits[group] = max(int(limit), 0)

    def has_room(self, execution: Execution) -> bool:
        """Room for it: ungrouped, or its group below its limit. A group without a limit (its
        surface has not opened it: not served here, or not yet at start-up) holds its executions."""
        group = execution.labels.get(GROUP_LABEL)
        if group is None:
            return True
        return self._running.get(group, 0) < self._limits.get(group, 0)

    def started(self, execution: Execution) -> None:
        group = execution.labels.get(GROUP_LABEL)
        if group is not None:
            self._running[group] = self._running.get(group, 0) + 1

    def ended(self, execution: Execution) -> None:
        group = execution.labels.get(GROUP_LABEL)
        if group is not None and group in self._running:
            self._running[group] -= 1
            if self._running[group] <= 0:
                del self._running[group]

    def running(self, group: str) -> int:
        return self._running.get(group, 0)


async def end_unstarted(planned: Planned, hub: Hub, status: ExecutionStatus, *,
                        reason: AbortReason | None = None, error: str | None = None) -> None:
    """End a queued execution that never started (cancelled, or not runnable): its steps (children
    before their branches) and itself, with the events that store and show it."""
    state = ExecutionState(planned.execution, planned.steps, hub, planned.masker)
    step_status = StepStatus.CANCELLED if status is ExecutionStatus.CANCELLED else StepStatus.SKIPPED
    for step in sorted(planned.steps, key=lambda s: (s.kind is StepKind.BRANCH, -s.index)):
        if not step.status.is_terminal:
            await state.finish_step(step, step_status, reason=reason)
    await state.finish(status, reason=reason, error=error)

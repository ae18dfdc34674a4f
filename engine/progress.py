"""How far an execution got: the done share of its work, the one definition every view shows.

The work is the execution's workflow and marker steps; a command that announced no steps is one
piece of work, its own (branch) step. A completed step counts whole, and so does a step done in an
earlier execution (a rerun from the failed step skips it); a running, failed or cancelled step
counts the share it reported (STEP_PROGRESS), else nothing; a pending or skipped one nothing. So
progress is frozen where the work ended (a run that failed after 1 of its 4 steps stays at 25%, a
command cancelled at 70% at 70%), and the status says how it ended. A completed execution is at 100%.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.model import COMPLETED_IN, TERMINAL_STEP, ExecutionStatus, Step, StepKind, StepStatus


def step_done_share(step: Step) -> float:
    """How much of `step`'s work is done, 0..1."""
    status = step.status
    if status is StepStatus.COMPLETED:
        return 1.0
    if status is StepStatus.SKIPPED:
        return 1.0 if step.metadata.get(COMPLETED_IN) else 0.0
    if step.progress is None or status is StepStatus.PENDING:
        return 0.0
    return min(max(step.progress, 0.0), 100.0) / 100.0


def execution_progress(status: ExecutionStatus, done: float, total: int) -> float:
    """Percent of the work done: `done` of `total` pieces of work (`step_done_share` summed)."""
    if status is ExecutionStatus.COMPLETED:
        return 100.0
    if total <= 0:
        return 0.0
    return round(min(100.0, 100.0 * done / total), 1)


class WorkTally:
    """The done shares of one execution's steps, kept as the steps change: recounting them all on
    each event would cost O(steps) (a fan-out to 100 targets has hundreds of steps and events).
    A step that ended is folded into running totals and forgotten: its share can no longer
    change, and a run of a million marker steps must not keep a million entries here."""

    __slots__ = ("_shares", "_branch_shares", "_settled", "_completed", "_work_done", "_branch_done")

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        #: the share counted for each step still open, by id (branches apart: they are the work
        #: only of a command that announced no steps)
        self._shares: dict[str, float] = {}
        self._branch_shares: dict[str, float] = {}
        #: steps that ended (each counted once: a step never leaves a terminal status)
        self._settled = 0
        self._completed = 0
        self._work_done = 0.0
        self._branch_done = 0.0
        for step in steps:
            self.count(step)

    def count(self, step: Step) -> bool:
        """Take `step` as it is now (new, or changed); True when its share or the totals changed."""
        status = step.status
        # a completed step's share, and a running one's without progress (the usual marker steps),
        # without the call
        if status is StepStatus.COMPLETED:
            share = 1.0
        elif status is StepStatus.RUNNING and step.progress is None:
            share = 0.0
        else:
            share = step_done_share(step)
        if step.kind is StepKind.BRANCH:
            before = self._branch_shares.get(step.id)
            self._branch_shares[step.id] = share
            self._branch_done += share - (before or 0.0)
            return before != share
        if status in TERMINAL_STEP:
            before = self._shares.pop(step.id, None)
            self._settled += 1
            if status is StepStatus.COMPLETED:
                self._completed += 1
            self._work_done += share - (before or 0.0)
            return True
        before = self._shares.get(step.id)
        self._shares[step.id] = share
        self._work_done += share - (before or 0.0)
        return before != share

    def started(self, step: Step) -> None:
        """`count(step)` of a new workflow or marker step, running, with no progress yet (its share
        is 0): what a command printing markers does thousands of times a second."""
        self._shares[step.id] = 0.0

    def completed(self, step: Step) -> None:
        """`count(step)` of a workflow or marker step that just completed: the usual end of the
        thousands of marker steps a second a command may print."""
        before = self._shares.pop(step.id, None)
        self._settled += 1
        self._completed += 1
        self._work_done += 1.0 - (before or 0.0)

    @property
    def work_total(self) -> int:
        """Workflow and marker steps (what `total_steps` counts)."""
        return len(self._shares) + self._settled

    @property
    def work_completed(self) -> int:
        return self._completed

    def percentage(self, status: ExecutionStatus) -> float:
        if self.work_total:
            return execution_progress(status, self._work_done, self.work_total)
        return execution_progress(status, self._branch_done, len(self._branch_shares))

"""Running one execution: its branches (one per target) and, for a workflow, the DAG of its steps."""

from __future__ import annotations

import asyncio
import collections
import heapq
import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field

from engine.artifacts import ArtifactStore
from engine.execution.command_pump import CommandOutcome, CommandPump
from engine.execution.state import ExecutionState
from engine.model import COMPLETED_IN, AbortReason, ExecutionStatus, Step, StepStatus
from engine.runners.base import CommandSpec, Runner

log = logging.getLogger(__name__)

#: reasons after which a stopped step is "cancelled" rather than "failed"
_CANCEL_REASONS = {AbortReason.USER, AbortReason.SHUTDOWN}


@dataclass(slots=True)
class StepPlan:
    """One workflow step on one target (or the single command of a command execution)."""

    step: Step
    branch: Step
    spec: CommandSpec
    timeout: float | None = None
    retries: int = 0
    continue_on_error: bool = False
    lenient_markers: bool = False
    artifacts: list[str] = field(default_factory=list)
    needs: list[StepPlan] = field(default_factory=list)
    #: rerun from the failed step: this one completed in that execution and is not run again
    done_in: str | None = None


@dataclass(slots=True)
class ExecutionPlan:
    branches: list[Step]
    steps: list[StepPlan]
    #: a command execution runs its command directly under the branch (no workflow step node)
    is_command: bool = False
    max_parallel: int = 4
    max_parallel_targets: int = 8
    allow_failed_targets: bool = False
    kill_grace: float = 10.0


class ExecutionRun:
    def __init__(
        self,
        state: ExecutionState,
        plan: ExecutionPlan,
        runner_for: Callable[[str], Runner],
        artifacts: ArtifactStore,
    ) -> None:
        self.state = state
        self.plan = plan
        self.runner_for = runner_for
        self.artifacts = artifacts
        self._branch_slots = {b.id: asyncio.Semaphore(plan.max_parallel) for b in plan.branches}
        self._target_slots = asyncio.Semaphore(plan.max_parallel_targets)
        #: branches holding a target slot: from their first step until they have nothing left to
        #: run but steps waiting on other branches (see `_release_targets`)
        self._holding: set[str] = set()
        self._holding_locks = {b.id: asyncio.Lock() for b in plan.branches}
        self._last_exit: int | None = None

    async def run(self) -> None:
        state = self.state
        try:
            await state.start()
            await self._schedule()
            await self._finish_branches()
            await self._finish_execution()
        except asyncio.CancelledError:
            # the engine is going away without its grace period: record it, then let go
            await asyncio.shield(self._abandon())
            raise
        except Exception as exc:  # a bug must not leave the execution "running"
            log.exception("execution %s crashed", state.execution.id)
            await asyncio.shield(self._abandon(error=f"internal error: {exc}"))

    async def _abandon(self, error: str | None = None) -> None:
        state = self.state
        reason = state.stop_reason or AbortReason.SHUTDOWN
        status = StepStatus.CANCELLED if error is None else StepStatus.FAILED
        for branch in self.plan.branches:
            await state.close_open_children(branch.id, status, reason)
            await state.finish_step(branch, status, reason=reason)
        if error is None:
            await state.finish(ExecutionStatus.CANCELLED, reason=reason, error=state.stop_message)
        else:
            await state.finish(ExecutionStatus.FAILED, error=error)

    # -- scheduling ---------------------------------------------------------------------------
    async def _schedule(self) -> None:
        state = self.state
        pending = _PendingPlans(self.plan.steps)
        running = _RunningSteps()
        # a workflow branch is finished once its own steps have all ended, not when the slowest
        # branch of the execution does: a host that failed at once shows failed at once
        unsettled: collections.Counter[str] = collections.Counter(p.branch.id for p in self.plan.steps)
        by_branch: dict[str, list[StepPlan]] = {}
        for p in self.plan.steps:
            by_branch.setdefault(p.branch.id, []).append(p)

        async def settle(plan: StepPlan) -> None:
            pending.settled(plan)
            branch = plan.branch
            unsettled[branch.id] -= 1
            if not unsettled[branch.id] and not self.plan.is_command and not branch.status.is_terminal:
                await self._finish_workflow_branch(branch, by_branch[branch.id])

        stop_wait = asyncio.create_task(state.stopping.wait())
        stop_wait.add_done_callback(lambda _task: running.wakeup.set())
        try:
            while pending or running:
                if state.stopping.is_set():
                    for plan in pending.take_all():
                        await self._skip(plan, stopped=True)
                for plan in pending.changed():
                    verdict = self._readiness(plan)
                    if verdict == "wait":
                        continue
                    pending.take(plan)
                    if verdict == "run":
                        running.start(self._run_step(plan), plan)
                        continue
                    if verdict == "skip":
                        await self._skip(plan, stopped=False)
                    else:
                        await self._mark_done_elsewhere(plan)
                    await settle(plan)
                self._release_targets(running.idle_branches())
                if not running:
                    for plan in pending.take_all():  # cannot happen with a validated DAG; never spin
                        await self._skip(plan, stopped=False)
                    break
                await running.wait_for_an_end(unless=lambda: bool(pending) and state.stopping.is_set())
                for task, plan in running.collect_ended():
                    task.result()
                    await settle(plan)
        except asyncio.CancelledError:
            await running.cancel()
            raise
        finally:
            stop_wait.cancel()
            self._release_targets(list(self._holding))

    def _release_targets(self, branch_ids: Iterable[str]) -> None:
        """A branch keeps its target slot while it has a step started or ready to start, so that
        `max_parallel_targets` branches run to their end before the next ones begin. A branch
        whose remaining steps all wait on other branches lets its slot go: holding it could
        starve the very branch it waits for."""
        for branch_id in branch_ids:
            if branch_id in self._holding:
                self._holding.discard(branch_id)
                self._target_slots.release()

    def _readiness(self, plan: StepPlan) -> str:
        if plan.done_in is not None:
            return "done"
        for need in plan.needs:
            status = need.step.status
            if need.done_in is not None:
                continue
            if status is StepStatus.COMPLETED:
                continue
            if status is StepStatus.FAILED and need.continue_on_error:
                continue
            if status.is_terminal:
                return "skip"
            return "wait"
        return "run"

    async def _skip(self, plan: StepPlan, *, stopped: bool) -> None:
        state = self.state
        if stopped:
            reason = state.stop_reason
            status = StepStatus.CANCELLED if reason in _CANCEL_REASONS else StepStatus.SKIPPED
            await state.finish_step(plan.step, status, reason=reason)
            return
        failed = [
            n.step.name
            for n in plan.needs
            if n.step.status.is_terminal and n.step.status is not StepStatus.COMPLETED
        ]
        message = f"skipped: needs {', '.join(repr(n) for n in sorted(set(failed)))} which did not complete"
        await state.finish_step(plan.step, StepStatus.SKIPPED, error=message)

    async def _mark_done_elsewhere(self, plan: StepPlan) -> None:
        plan.step.metadata[COMPLETED_IN] = plan.done_in
        plan.step.description = plan.step.description or f"completed in {plan.done_in}"
        await self.state.finish_step(plan.step, StepStatus.SKIPPED)

    # -- one step --------------------------------------------------------------------------
    async def _run_step(self, plan: StepPlan) -> None:
        async with self._branch_slots[plan.branch.id]:
            async with self._target_slot(plan.branch):
                if self.state.stopping.is_set():
                    await self._skip(plan, stopped=True)
                    return
                await self.state.start_step(plan.branch)
                if not self.plan.is_command:
                    await self.state.start_step(plan.step)
                outcome = await self._run_attempts(plan)
                await self._finish_step(plan, outcome)

    def _target_slot(self, branch: Step) -> _TargetSlot:
        return _TargetSlot(self, branch.id)

    async def _run_attempts(self, plan: StepPlan) -> CommandOutcome:
        state = self.state
        try:
            runner = self.runner_for(plan.branch.target)
        except Exception as exc:
            message = f"target {plan.branch.target!r}: {exc}"
            await state.system_line(plan.step.id, f"error: {message}")
            return CommandOutcome(None, AbortReason.SPAWN_ERROR, message)
        attempts = plan.retries + 1
        outcome = CommandOutcome(None)
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                plan.step.metadata["attempt"] = attempt
                await state.system_line(
                    plan.step.id, f"retrying (attempt {attempt} of {attempts}) after {_describe(outcome)}"
                )
            pump = CommandPump(
                state,
                plan.step,
                runner,
                plan.spec,
                self.artifacts,
                lenient_markers=plan.lenient_markers,
                kill_grace=self.plan.kill_grace,
            )
            outcome = await pump.run(plan.timeout)
            if plan.artifacts and attempt == attempts or plan.artifacts and outcome.ok:
                await pump.collect_globs(plan.artifacts)
            if outcome.ok or outcome.reason in _CANCEL_REASONS or outcome.reason is AbortReason.STOP_ON_ERROR:
                break
            if state.stopping.is_set():
                break
        return outcome

    async def _finish_step(self, plan: StepPlan, outcome: CommandOutcome) -> None:
        state = self.state
        self._last_exit = outcome.exit_code
        step = plan.step
        if outcome.ok:
            await state.finish_step(step, StepStatus.COMPLETED, exit_code=outcome.exit_code)
            return
        if outcome.reason is AbortReason.STOP_ON_ERROR:
            state.request_stop(AbortReason.STOP_ON_ERROR, outcome.error)
        if outcome.reason in _CANCEL_REASONS or (
            outcome.reason is AbortReason.STOP_ON_ERROR and state.stop_message != outcome.error
        ):
            status = StepStatus.CANCELLED
        else:
            status = StepStatus.FAILED
        error = outcome.error or _describe(outcome)
        if self.plan.is_command:
            # the branch is the node that ran the command; it is finished in _finish_branches
            step.metadata["outcome_error"] = error
            step.metadata["outcome_status"] = status.value
            if outcome.reason is not None:
                step.metadata["outcome_reason"] = outcome.reason.value
            return
        await state.finish_step(step, status, exit_code=outcome.exit_code, error=error, reason=outcome.reason)

    # -- endings ---------------------------------------------------------------------------
    async def _finish_branches(self) -> None:
        by_branch: dict[str, list[StepPlan]] = {}
        for plan in self.plan.steps:
            by_branch.setdefault(plan.branch.id, []).append(plan)
        for branch in self.plan.branches:
            if branch.status.is_terminal:
                continue
            mine = by_branch.get(branch.id, [])
            if self.plan.is_command:
                await self._finish_command_branch(branch, mine[0] if mine else None)
                continue
            await self._finish_workflow_branch(branch, mine)

    async def _finish_workflow_branch(self, branch: Step, mine: list[StepPlan]) -> None:
        """The branch's status from its steps' (all of them ended, or will never run)."""
        state = self.state
        failed = [p for p in mine if p.step.status is StepStatus.FAILED and not p.continue_on_error]
        cancelled = [p for p in mine if p.step.status is StepStatus.CANCELLED]
        skipped = [p for p in mine if p.step.status is StepStatus.SKIPPED and p.done_in is None]
        if branch.status is StepStatus.PENDING:
            if mine and all(p.done_in is not None for p in mine):
                # rerun from the failed step: this branch had completed in an earlier execution
                branch.metadata[COMPLETED_IN] = mine[0].done_in
                await state.finish_step(branch, StepStatus.SKIPPED)
            elif cancelled or state.stop_reason in _CANCEL_REASONS:
                await state.finish_step(branch, StepStatus.CANCELLED, reason=state.stop_reason)
            else:
                await state.finish_step(branch, StepStatus.SKIPPED)
            return
        if failed:
            first = failed[0].step
            await state.finish_step(
                branch,
                StepStatus.FAILED,
                exit_code=first.exit_code,
                error=f"step '{first.name}' failed: {first.error_message or 'failed'}",
            )
        elif cancelled or (skipped and state.stop_reason in _CANCEL_REASONS):
            await state.finish_step(branch, StepStatus.CANCELLED, reason=state.stop_reason)
        elif skipped:
            names = ", ".join(repr(p.step.name) for p in skipped)
            await state.finish_step(branch, StepStatus.FAILED, error=f"steps not run: {names}")
        else:
            await state.finish_step(branch, StepStatus.COMPLETED, exit_code=0)

    async def _finish_command_branch(self, branch: Step, plan: StepPlan | None) -> None:
        state = self.state
        if plan is None or branch.status is StepStatus.PENDING:
            status = StepStatus.CANCELLED if state.stop_reason in _CANCEL_REASONS else StepStatus.SKIPPED
            await state.finish_step(branch, status, reason=state.stop_reason)
            return
        meta = branch.metadata
        if "outcome_status" not in meta:
            await state.finish_step(branch, StepStatus.COMPLETED, exit_code=self._exit_of(branch))
            return
        status = StepStatus(meta.pop("outcome_status"))
        error = meta.pop("outcome_error", None)
        reason_text = meta.pop("outcome_reason", None)
        reason = AbortReason(reason_text) if reason_text else None
        await state.finish_step(branch, status, exit_code=self._exit_of(branch), error=error, reason=reason)

    def _exit_of(self, branch: Step) -> int | None:
        return self._last_exit

    async def _finish_execution(self) -> None:
        state = self.state
        branches = self.plan.branches
        reason = state.stop_reason
        if reason in _CANCEL_REASONS:
            await state.finish(
                ExecutionStatus.CANCELLED,
                reason=reason,
                error=state.stop_message or _cancel_message(reason),
                exit_code=self._last_exit,
            )
            return
        failed = [
            b for b in branches if b.status is not StepStatus.COMPLETED and COMPLETED_IN not in b.metadata
        ]
        ok = len(failed) < len(branches)
        if not failed or (self.plan.allow_failed_targets and ok):
            exit_code = self._last_exit if self.plan.is_command else 0
            await state.finish(ExecutionStatus.COMPLETED, exit_code=exit_code if exit_code is not None else 0)
            return
        first = failed[0]
        error = first.error_message or f"branch '{first.name}' {first.status.value}"
        if len(branches) > 1:
            error = f"{first.name}: {error}"
            others = [b.name for b in failed[1:] if b.status is not StepStatus.SKIPPED]
            if others:  # the execution's one line of error must not hide that more hosts failed
                error += f" (also failed: {', '.join(others)})"
        if reason is AbortReason.STOP_ON_ERROR:
            error = state.stop_message or error
        exit_code = first.exit_code if first.exit_code not in (None, 0) else 1
        await state.finish(
            ExecutionStatus.FAILED, exit_code=exit_code, error=error, reason=_failure_reason(first, reason)
        )


class _PendingPlans:
    """The plans neither started nor settled, in plan order. A plan is looked at again only when
    one of its needs settled: the work per event is the dependents of what ended, not every step
    (a fan-out to many targets has many)."""

    def __init__(self, plans: list[StepPlan]) -> None:
        self._position = {id(p): i for i, p in enumerate(plans)}
        self._dependents: dict[int, list[int]] = {}
        for plan in plans:
            for need in plan.needs:
                self._dependents.setdefault(id(need), []).append(self._position[id(plan)])
        self._pending = dict(enumerate(plans))
        #: positions of plans whose needs changed since they were last looked at (a heap)
        self._changed = list(self._pending)

    def __bool__(self) -> bool:
        return bool(self._pending)

    def changed(self) -> Iterator[StepPlan]:
        """The pending plans whose needs changed, in plan order, those that change meanwhile too."""
        while self._changed:
            plan = self._pending.get(heapq.heappop(self._changed))
            if plan is not None:
                yield plan

    def take(self, plan: StepPlan) -> None:
        del self._pending[self._position[id(plan)]]

    def settled(self, plan: StepPlan) -> None:
        """`plan`'s step ended (or will never run): its dependents are to be looked at again."""
        for position in self._dependents.get(id(plan), ()):
            heapq.heappush(self._changed, position)

    def take_all(self) -> list[StepPlan]:
        plans = [self._pending[position] for position in sorted(self._pending)]
        self._pending.clear()
        return plans


class _RunningSteps:
    """The tasks of the steps started and not collected yet; each says when it ends."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], StepPlan] = {}
        self._per_branch: dict[str, int] = {}
        #: branches whose last running step ended: they may let their target slot go
        self._idle: set[str] = set()
        self._ended: collections.deque[asyncio.Task[None]] = collections.deque()
        self.wakeup = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def start(self, coro: Coroutine[object, object, None], plan: StepPlan) -> None:
        task = asyncio.create_task(coro)
        task.add_done_callback(self._on_done)
        self._tasks[task] = plan
        self._per_branch[plan.branch.id] = self._per_branch.get(plan.branch.id, 0) + 1

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._ended.append(task)
        self.wakeup.set()

    async def wait_for_an_end(self, unless: Callable[[], bool]) -> None:
        """Until a task ended (or `unless()` holds, checked at each wake-up)."""
        while not self._ended and not unless():
            self.wakeup.clear()
            await self.wakeup.wait()

    def collect_ended(self) -> list[tuple[asyncio.Task[None], StepPlan]]:
        ended = []
        while self._ended:
            task = self._ended.popleft()
            plan = self._tasks.pop(task)
            self._per_branch[plan.branch.id] -= 1
            if not self._per_branch[plan.branch.id]:
                self._idle.add(plan.branch.id)
            ended.append((task, plan))
        return ended

    def idle_branches(self) -> list[str]:
        """Branches whose steps all ended (none started since)."""
        idle = [branch_id for branch_id in self._idle if not self._per_branch.get(branch_id)]
        self._idle.clear()
        return idle

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class _TargetSlot:
    """Takes one of the execution's target slots for the branch, unless it holds one already;
    the scheduler gives it back (`ExecutionRun._release_targets`)."""

    def __init__(self, run: ExecutionRun, branch_id: str) -> None:
        self.run = run
        self.branch_id = branch_id

    async def __aenter__(self) -> None:
        run = self.run
        async with run._holding_locks[self.branch_id]:
            if self.branch_id not in run._holding:
                await run._target_slots.acquire()
                run._holding.add(self.branch_id)

    async def __aexit__(self, *exc: object) -> None:
        return None


def _describe(outcome: CommandOutcome) -> str:
    if outcome.error:
        return outcome.error
    if outcome.exit_code is None:
        return "did not run"
    if outcome.exit_code > 128:
        return f"killed by signal {outcome.exit_code - 128}"
    return f"exit code {outcome.exit_code}"


def _cancel_message(reason: AbortReason | None) -> str:
    if reason is AbortReason.SHUTDOWN:
        return "cancelled: the engine was shutting down"
    return "cancelled by user"


def _failure_reason(branch: Step, reason: AbortReason | None) -> AbortReason | None:
    if reason is not None:
        return reason
    return branch.abort_reason

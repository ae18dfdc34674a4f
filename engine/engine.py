"""The engine: owns every live execution; commands go down through its methods, events come up
through `subscribe()`. It implements `engine.client.EngineClient` in-process."""

from __future__ import annotations

import asyncio
import functools
import getpass
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.admission import AdmissionGroups, AdmissionQueue, end_unstarted
from engine.artifact_commands import ArtifactCommands
from engine.artifacts import ArtifactStore
from engine.defaults import DEFAULT_MAX_RUNNING
from engine.errors import Conflict, InvalidRequest, NotFound, ShuttingDown, StoreError
from engine.events import ExecutionCreated, ExecutionDeleted, ExecutionUpdated
from engine.execution.run import ExecutionRun
from engine.execution.state import ExecutionState
from engine.hub import Hub
from engine.live_reads import LiveReads
from engine.model import (
    COMPLETED_IN,
    AbortReason,
    Execution,
    ExecutionKind,
    ExecutionStatus,
    StepKind,
    StepStatus,
    utcnow,
)
from engine.ownership import owner_is_alive, this_engine
from engine.runners.base import Runner
from engine.store_writer import StoreWriter
from engine.submission import Planned, SubmitRequest, check_request, command_request_of, plan_command
from engine.surrogates import replace_in, replace_surrogates, unencodable

if TYPE_CHECKING:
    from engine.jobs import Jobs
    from engine.runners.worker import WorkerPool
    from engine.store import Store
    from engine.workflow.load import Workflow

log = logging.getLogger(__name__)
#: beyond a run's kill grace, what its end may take (the store barrier, the runner's own cleanup)
_STOP_SLACK = 5.0


@dataclass(slots=True)
class EngineConfig:
    #: seconds between SIGTERM and SIGKILL when stopping a command
    kill_grace: float = 10.0
    #: seconds running executions get to stop at shutdown before they are abandoned
    shutdown_grace: float = 10.0
    #: targets known besides `local` (from the user's targets file), name -> target config
    targets: dict[str, Any] = field(default_factory=dict)
    #: executions running at once; more wait in the queue (by priority, then age). 0: none starts
    max_running: int = DEFAULT_MAX_RUNNING
    #: at start, queue what stopped or dead engines left queued (a one-shot `stepflow run` does not)
    adopt_queued: bool = True


class Engine(ArtifactCommands, LiveReads):
    """The artifact commands are `engine.artifact_commands`'s."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        config: EngineConfig | None = None,
        *,
        runner_factory: Callable[[str, Any], Runner] | None = None,
    ) -> None:
        self.store = store
        self.data_dir = Path(data_dir)
        self.config = config or EngineConfig()
        self.hub = Hub()
        self.writer = StoreWriter(store, self.hub.sink)
        self.writer.on_failed = self._not_stored
        self.artifacts = ArtifactStore(self.data_dir / "artifacts")
        self._runner_factory = runner_factory or _default_runner_factory
        self._runners: dict[str, Runner] = {}
        self._runs: dict[str, tuple[ExecutionState, asyncio.Task[None]]] = {}
        #: each live run's kill grace (what bounds the wait of `cancel_and_delete`)
        self._kill_graces: dict[str, float] = {}
        self._queue = AdmissionQueue()
        #: running limits per admission group (engine.admission.GROUP_LABEL)
        self._groups = AdmissionGroups()
        #: slots taken by executions being created to start at once (not yet in `_runs`)
        self._reserved = 0
        #: set (and replaced) whenever an execution leaves the queue
        self._left_queue = asyncio.Event()
        self._closing = False
        self._started = False
        # made at their first use (`jobs`, `workers`): `stepflow exec` uses neither, and starts
        # without importing them (tests/test_startup_imports.py)
        self._jobs: Jobs | None = None
        self._workers: WorkerPool | None = None

    @property
    def jobs(self) -> Jobs:
        """Jobs: executions worker processes claim and run (engine.jobs)."""
        if self._jobs is None:
            from engine.jobs import Jobs

            self._jobs = Jobs(self.store, self.hub, self.writer, self.artifacts)
        return self._jobs

    @jobs.setter
    def jobs(self, jobs: Jobs) -> None:  # an attribute to who serves the engine (api_compat.state)
        self._jobs = jobs

    @property
    def workers(self) -> WorkerPool:
        """The commands of `worker` targets, waiting for (and run by) `stepflow worker` processes."""
        if self._workers is None:
            from engine.runners.worker import WorkerPool

            self._workers = WorkerPool()
        return self._workers

    @property
    def description(self) -> str:
        return str(self.data_dir)

    # -- life cycle ------------------------------------------------------------------------------
    async def start(self) -> list[str]:
        """Open the store, mark what a dead engine left running as lost (and stop the processes
        they left running), start writing. Returns the ids of the executions found lost."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.store.open()
        lost = await mark_lost(self.store)
        self.writer.start()
        self._started = True
        if self.config.adopt_queued:
            await self._adopt_queue()
            self._admit_waiting()
        # (the process's garbage collector is the program's to tune, not this library's: the
        # `stepflow` command freezes what exists at this point once start() returns)
        return lost

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop intake, ask running executions to stop (reason "shutdown"), wait up to the grace
        period, abandon the rest (recorded as cancelled), flush the store and close it."""
        if not self._started:
            return
        self._closing = True
        grace = self.config.shutdown_grace if grace is None else grace
        # what waits stays queued in the store, let go for the next engine to start
        for planned in self._queue.drain():
            planned.execution.owner = None
            await self.hub.publish(ExecutionUpdated(planned.execution.snapshot()))
        self._dequeued()
        for state, _task in list(self._runs.values()):
            state.request_stop(AbortReason.SHUTDOWN, "cancelled: the engine was shutting down")
        tasks = [task for _state, task in self._runs.values()]
        if tasks:
            _done, still = await asyncio.wait(tasks, timeout=grace + 1)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still, timeout=5)
        if self._jobs is not None:
            await self._jobs.close()
        if self._workers is not None:
            await self._workers.close()
        await self.writer.stop()
        for runner in self._runners.values():
            try:
                await runner.close()
            except Exception:
                log.exception("closing a runner failed")
        self.hub.close()
        await self.store.close()
        self._started = False

    # -- commands ---------------------------------------------------------------------------------
    async def submit(self, request: SubmitRequest) -> Execution:
        """Validate and plan a command or a workflow; start it when there is room, else queue it
        (stored pending, admitted later by priority, then age). Returns at once either way. A
        workflow that does not validate raises `WorkflowError` before anything is created."""
        self._check_open()
        check_request(request)
        if request.kind is ExecutionKind.JOB:
            return await self.jobs.submit(request)  # a worker runs it, not this engine
        if request.kind is ExecutionKind.WORKFLOW:
            planned = await self._plan_workflow(request)
        else:
            planned = plan_command(request, user=request.user or _current_user(),
                                   kill_grace=self.config.kill_grace, check_target=self._check_target)
        execution = planned.execution
        execution.priority = request.priority
        execution.source = replace_surrogates(request.source)
        execution.labels = replace_in(dict(request.labels))
        execution.owner = this_engine()
        if not self._queue and self._has_room() and self._groups.has_room(execution):
            # the fast path: admitted at creation, one barrier
            execution.admitted_at = utcnow()
            return await self._launch(planned)
        await self._create(planned)
        self._queue.push(planned)
        self._admit_waiting()
        return execution.snapshot()

    async def _plan_workflow(self, request: SubmitRequest) -> Planned:
        # imported here: the workflow schema (pydantic) is ~0.2 s of a start-up that runs no workflow
        from engine.workflow.load import read_workflow

        text = request.workflow_text
        if text is not None and (bad := unencodable(text)) is not None:
            raise InvalidRequest(f"the workflow text contains a lone surrogate ({bad}), which is not text")
        # in a thread, with a time bound: the API and the TUI hand over documents of any size
        workflow = await read_workflow(request.workflow_path, text=text, known_targets=set(self.config.targets))
        self._check_open()  # again: shutdown may have begun while the thread read
        for target in request.targets:
            self._check_target(target, workflow)
        from engine.workflow.plan import plan_workflow

        execution, steps, plan, masker = plan_workflow(
            workflow, list(request.targets) or None, request.name, request.user or _current_user(),
            request.done_steps, known_targets=self.config.targets, kill_grace=self.config.kill_grace,
        )
        # every branch's target must be known (to the workflow or the targets file)
        for t in execution.targets:
            self._check_target(t, workflow)
        execution.rerun_of = request.rerun_of
        # a path or name from the command line may hold bytes that are not UTF-8
        execution.name = replace_surrogates(execution.name)
        execution.command = replace_surrogates(execution.command)
        execution.working_directory = replace_surrogates(execution.working_directory)
        return Planned(execution, steps, plan, masker, workflow.targets)

    async def _create(self, planned: Planned) -> None:
        """Store the new execution and its steps; raise (and store nothing more) when it could not."""
        execution = planned.execution
        await self.hub.publish(ExecutionCreated(execution.snapshot(), tuple(s.snapshot() for s in planned.steps)))
        await self.writer.stored(execution.id)  # no one shall be told it was accepted

    async def _launch(self, planned: Planned) -> Execution:
        self._reserved += 1  # its slot, while the store is written
        try:
            await self._create(planned)
        except BaseException:
            self._reserved -= 1
            self._admit_waiting()  # the slot it held may be one a queued execution can have
            raise
        self._reserved -= 1
        self._start_run(planned)
        return planned.execution.snapshot()

    def _start_run(self, planned: Planned, *, from_queue: bool = False) -> ExecutionState:
        """Run it in a task, forgotten once the store holds its end. `from_queue`: its admission
        is stored first (`_admission_stored`)."""
        execution = planned.execution
        state = ExecutionState(execution, planned.steps, self.hub, planned.masker)
        targets = planned.workflow_targets
        run = ExecutionRun(state, planned.plan, lambda t: self._runner(t, targets), self.artifacts)
        task = asyncio.create_task(self._run_then_forget(run, from_queue), name=f"execution-{execution.id}")
        self._runs[execution.id] = (state, task)
        self._kill_graces[execution.id] = planned.plan.kill_grace
        self._groups.started(execution)
        return state

    # -- admission --------------------------------------------------------------------------------
    def _has_room(self) -> bool:
        return len(self._runs) + self._reserved < self.config.max_running

    def _admit_waiting(self) -> None:
        """Start queued executions while there is room (each one's admission stored first)."""
        while not self._closing and self._started and self._queue and self._has_room():
            planned = self._queue.pop(self._groups.has_room)
            if planned is None:
                break
            planned.execution.admitted_at = utcnow()
            planned.execution.owner = this_engine()
            self._start_run(planned, from_queue=True)
            self._dequeued()

    async def _admission_stored(self, run: ExecutionRun) -> bool:
        """Make the admission durable before any process starts: a crash between the two loses
        the execution ("engine lost") rather than running it twice. False (and it is failed) when
        the store could not take it."""
        state = run.state
        await self.hub.publish(ExecutionUpdated(state.execution.snapshot()))
        await self.writer.barrier()
        if (not_stored := self.writer.failures.get(state.execution.id)) is not None:
            await state.finish(ExecutionStatus.FAILED, error=not_stored.message)
            return False
        return True

    def _dequeued(self) -> None:
        """Wake whoever waits for a queued execution to leave the queue (`wait`)."""
        left, self._left_queue = self._left_queue, asyncio.Event()
        left.set()

    async def _adopt_queue(self) -> None:
        """Queue what stopped or dead engines left queued, rebuilt from the stored rows; end, failed,
        what cannot be rebuilt."""
        from engine.adoption import adopt_queue  # a lasting engine's: a one-shot `exec` adopts nothing

        adopted, failed = await adopt_queue(self.store, owner_alive, this_engine(), user=_current_user(),
                                            kill_grace=self.config.kill_grace, known_targets=self.config.targets,
                                            check_target=self._check_target)
        for planned, message in failed:
            log.warning("queued execution %s %s", planned.execution.id, message)
            await end_unstarted(planned, self.hub, ExecutionStatus.FAILED, error=message)
        for planned in adopted:
            await self.hub.publish(ExecutionUpdated(planned.execution.snapshot()))  # ours now
            self._queue.push(planned)
        if adopted or failed:
            await self.writer.barrier()
            log.info("queued %d execution(s) left waiting by a stopped engine", len(adopted))

    def queue_place(self, execution_id: str) -> int | None:
        """An execution's place in this engine's queue (1: next), None when it does not wait."""
        return self._queue.place(execution_id)

    def _not_stored(self, execution_id: str, error: StoreError) -> None:
        """The store writer could not store what the execution did: stop it, failed with that."""
        entry = self._runs.get(execution_id)
        if entry is not None:
            entry[0].request_stop(AbortReason.STOP_ON_ERROR, error.message)

    async def _run_then_forget(self, run: ExecutionRun, from_queue: bool) -> None:
        try:
            if not from_queue or await self._admission_stored(run):
                await run.run()
                # readers fall back to the store once the run is forgotten: it must hold the end first
                await self.writer.barrier()
        finally:
            self._forget(run.state.execution.id)

    def set_group_limit(self, group: str, limit: int | None) -> None:
        """At most `limit` executions labelled with this admission group run at once (0 or None:
        none starts, they wait in the queue, as they do until their group's surface sets a limit);
        queued ones start now when the new limit has room for them."""
        self._groups.set_limit(group, limit)
        self._admit_waiting()

    def group_running(self, group: str) -> int:
        return self._groups.running(group)

    def _forget(self, execution_id: str) -> None:
        entry = self._runs.pop(execution_id, None)
        if entry is not None:
            self._groups.ended(entry[0].execution)
        self._kill_graces.pop(execution_id, None)
        self._admit_waiting()  # its slot is free

    async def cancel(self, execution_id: str, reason: AbortReason = AbortReason.USER) -> None:
        queued = self._queue.remove(execution_id)
        if queued is not None:
            # nothing of it runs: it ends here, stored before the answer
            self._dequeued()
            message = "cancelled by user before it started" if reason is AbortReason.USER else None
            await end_unstarted(queued, self.hub, ExecutionStatus.CANCELLED, reason=reason, error=message)
            await self.writer.barrier()
            return
        entry = self._runs.get(execution_id)
        if entry is None or entry[0].execution.status.is_terminal:
            execution = await self.store.get_execution(execution_id)
            if execution is None:
                raise NotFound(f"no execution {execution_id}")
            if execution.kind is ExecutionKind.JOB and execution.status is ExecutionStatus.PENDING:
                await self.jobs.cancel(execution_id)  # still queued for a worker
                return
            raise Conflict(f"execution {execution_id} is {execution.status.value}, not running"
                           + (" here: a worker runs it" if execution.kind is ExecutionKind.JOB else ""))
        state, _task = entry
        message = "cancelled by user" if reason is AbortReason.USER else None
        state.request_stop(reason, message)

    async def wait(self, execution_id: str) -> Execution:
        """Wait for a live execution to end and return its final state (for the CLI and tests).
        Raises StoreError (StoreFull) when what it did could not be stored: it is failed, whatever
        its commands did."""
        while execution_id in self._queue:
            await self._left_queue.wait()
        entry = self._runs.get(execution_id)
        if entry is not None:
            state, task = entry
            await asyncio.shield(task)
            await self.writer.stored(execution_id)
            return state.execution.snapshot()
        await self.writer.stored(execution_id)
        execution = await self.store.get_execution(execution_id)
        if execution is None:
            raise NotFound(f"no execution {execution_id}")
        return execution

    async def rerun(self, execution_id: str, *, from_failed: bool = False) -> Execution:
        original = await self.get_execution(execution_id)
        if original is None:
            raise NotFound(f"no execution {execution_id}")
        # nothing left to run is refused before anything is created (it made an execution of
        # skipped steps, "completed")
        nothing_left = InvalidRequest(f"nothing to rerun: every step of {execution_id} completed")
        if from_failed and original.status is ExecutionStatus.COMPLETED:
            raise nothing_left
        if original.kind is ExecutionKind.JOB:
            raise Conflict("a job runs again when it is submitted again (POST /api/v1/jobs)")
        if original.kind is ExecutionKind.WORKFLOW:
            if not original.workflow_source:
                raise Conflict("this execution has no stored workflow to run again")
            done: dict[tuple[str, str], str] = {}
            if from_failed:
                workflow_steps = [s for s in await self.get_steps(execution_id) if s.kind is StepKind.WORKFLOW]
                for step in workflow_steps:
                    if step.status is StepStatus.COMPLETED or (
                        step.status is StepStatus.SKIPPED and step.metadata.get(COMPLETED_IN)
                    ):
                        done[(step.target, step.name)] = step.metadata.get(COMPLETED_IN) or execution_id
                if workflow_steps and len(done) == len(workflow_steps):
                    raise nothing_left
            from engine.workflow.plan import stored_workflow_path

            path = stored_workflow_path(original)
            return await self.submit(SubmitRequest(
                kind=ExecutionKind.WORKFLOW, source=original.source, workflow_path=path,
                workflow_text=original.workflow_source, name=original.name, priority=original.priority,
                rerun_of=execution_id, done_steps=done,
            ))
        request = command_request_of(original, rerun_of=execution_id)
        request.labels = {}  # the ids other surfaces know the original by are the original's
        request.user = None  # whoever asks for the rerun runs it
        return await self.submit(request)

    async def cancel_and_delete(self, execution_id: str) -> bool:
        """Delete an execution, cancelling it first when it runs; True when it was cancelled. The
        wait for its processes is bounded by its kill grace (TERM, then KILL after the grace) plus
        slack for the store; past that the deletion is refused (Conflict) rather than leaving a
        run writing into a deleted execution."""
        cancelled = execution_id in self._queue
        if cancelled:
            await self.cancel(execution_id)
        entry = self._runs.get(execution_id)
        if entry is not None:
            state, task = entry
            if not state.execution.status.is_terminal:
                state.request_stop(AbortReason.USER, "cancelled by user")
                cancelled = True
            bound = self._kill_graces.get(execution_id, self.config.kill_grace) + _STOP_SLACK
            try:
                await asyncio.wait_for(asyncio.shield(task), bound)
            except TimeoutError:
                raise Conflict(f"the execution did not stop within {bound:g}s: try again") from None
            await self.writer.barrier()
        await self.delete(execution_id)
        return cancelled

    async def delete(self, execution_id: str) -> None:
        if execution_id in self._runs:
            raise Conflict("the execution is still running: cancel it first")
        execution = await self.store.get_execution(execution_id)
        if execution is None:
            raise NotFound(f"no execution {execution_id}")
        if not execution.status.is_terminal:
            raise Conflict(f"the execution is {execution.status.value}: cancel it first")
        await self.hub.publish(ExecutionDeleted(execution_id))
        await self.writer.barrier()
        await self.artifacts.remove_execution(execution_id)

    # -- helpers ----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closing:
            raise ShuttingDown("the engine is shutting down and takes no new work")
        if not self._started:
            raise ShuttingDown("the engine is not started")

    def _check_target(self, target: str, workflow: Workflow | None = None) -> None:
        if target == "local" or target in self.config.targets:
            return
        if workflow is not None and target in workflow.targets:
            return
        known = sorted({"local", *self.config.targets, *(workflow.targets if workflow else {})})
        raise InvalidRequest(f"unknown target {target!r} (known: {', '.join(known)})")

    def _runner(self, target: str, workflow_targets: Mapping[str, Any]) -> Runner:
        config = workflow_targets.get(target) or self.config.targets.get(target)
        key = f"{target}:{config!r}"
        runner = self._runners.get(key)
        if runner is None:
            kind = config.get("type") if isinstance(config, Mapping) else getattr(config, "type", None)
            if kind == "worker":  # commands for `stepflow worker` processes: the engine's pool holds them
                from engine.runners.worker import WorkerRunner

                pool = config.get("pool") if isinstance(config, Mapping) else getattr(config, "pool", "")
                runner = WorkerRunner(self.workers, str(pool))
            else:
                runner = self._runner_factory(target, config)
            self._runners[key] = runner
        return runner


def owner_alive(owner: str | None) -> bool:
    return owner == this_engine() or owner_is_alive(owner)


async def mark_lost(store: Store) -> list[str]:
    """Mark what a dead engine left running as failed ("engine lost"), and stop the processes
    those executions left running here (when the dead engine's watchdog could not). Waits at most
    a second or so, and only when such processes are found. Returns the lost executions' ids."""
    from engine.runners.orphans import stop_lost_processes

    lost = await store.mark_lost(owner_alive)
    if lost:
        log.warning("marked %d execution(s) left running by a dead engine as failed", len(lost))
        await stop_lost_processes(lost)
    return lost


def _default_runner_factory(target: str, config: Any) -> Runner:
    if config is None or getattr(config, "type", "local") == "local":
        from engine.runners.local import LocalRunner

        return LocalRunner()
    try:
        from engine.runners.targets import runner_for
    except ImportError as exc:  # pragma: no cover - until remote runners land
        raise RuntimeError(f"target type {config.type!r} is not supported yet") from exc
    return runner_for(config)


@functools.cache
def _current_user() -> str:
    """This process's user, looked up once: without USER or LOGNAME in the environment (a service),
    `getpass.getuser` reads the password database, each time, for each execution submitted."""
    try:
        return getpass.getuser()
    except Exception:
        return os.environ.get("USER", "")

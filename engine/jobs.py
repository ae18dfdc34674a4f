"""Jobs: executions that worker processes (executr's executors, `stepflow worker`) claim from the
store's work queue, run on their machine and report on.

A job is an execution of kind JOB (shown like any other: pending, running on its worker, finished,
its markers as steps) linked to a queue item of the same id in the queue "executr". The queue item
is the truth of who holds it (its guarded statements: never one job to two workers, a worker that
lost its job cannot finish it); the engine moves the execution to match and publishes the events
the store writer stores. No engine admits a job (engine.admission.is_queued), and no engine's start
marks a running one lost (its worker holds it: its heartbeats decide, `requeue_stale`).

A claim is answered once the queue item's claim is committed: durable, so a crash after the answer
leaves the job with the worker it was answered to. The execution's move to running follows through
the store writer like any event (`as_claimed` shows it meanwhile); if the process stops before that
event is written, the job's report or its stale check records the claim then (`_take`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from engine.artifacts import ArtifactStore
from engine.errors import Conflict, InvalidRequest, NotFound
from engine.events import ExecutionCreated, ExecutionStarted, ExecutionUpdated
from engine.execution.command_pump import CommandPump
from engine.execution.state import ExecutionState
from engine.execution.transitions import move_execution
from engine.hub import Hub
from engine.job_live import LiveJob, OutputPiece
from engine.job_output import ReportedCommand, ReportedRunner, truncate_utf8
from engine.masking import Masker
from engine.model import (
    AbortReason,
    Execution,
    ExecutionKind,
    ExecutionStatus,
    Step,
    StepKind,
    StepStatus,
    new_id,
    utcnow,
)
from engine.runners.base import CommandSpec
from engine.store import QueueCount, QueueFilter, QueueItem, QueueStatus, Store
from engine.store_writer import StoreWriter
from engine.submission import SubmitRequest
from engine.surrogates import replace_in, replace_surrogates

log = logging.getLogger(__name__)

#: the work queue jobs wait in
JOB_QUEUE = "executr"
#: labels of a job's execution and queue item
JOB_LABEL = "executr.job"
TYPE_LABEL = "executr.type"
EXECUTOR_LABEL = "executr.executor"
#: the execution's metadata key holding its attempts (one per claim)
ATTEMPTS_KEY = "executr.attempts"
#: the branch step every job's output (and marker steps) hangs under
BRANCH_NAME = "executr"


class NotHolder(Conflict):
    """The job is held by another worker."""


class NotRunning(InvalidRequest):
    """The job is not running (pending, or finished)."""


class NotPending(InvalidRequest):
    """The job has left the queue (it runs, or it ended)."""


@dataclass(slots=True, frozen=True)
class JobReport:
    """What a worker reports when it ends a job."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int | None = None
    error_message: str | None = None


@dataclass(slots=True, frozen=True)
class Claimed:
    item: QueueItem
    execution: Execution


class Jobs:
    def __init__(self, store: Store, hub: Hub, writer: StoreWriter, artifacts: ArtifactStore) -> None:
        self.store = store
        self.hub = hub
        self.writer = writer
        self.artifacts = artifacts
        #: set (and replaced) whenever a job may be claimable: submitted, or back in the queue
        self._work = asyncio.Event()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        #: claims waiting for the next batch (one store transaction for all who claim at once)
        self._claimers: list[tuple[str, asyncio.Future[QueueItem | None]]] = []
        self._claiming: asyncio.Task[None] | None = None
        #: jobs whose worker streams their output as they run (engine.job_live)
        self._live: dict[str, LiveJob] = {}
        #: the executions of claimed jobs as their claims left them, until the store shows those
        #: claims (a claim answers before its event is written: see `claim`, `as_claimed`)
        self._claimed: dict[str, Execution] = {}

    # -- submission ---------------------------------------------------------------------------
    async def submit(self, request: SubmitRequest) -> Execution:
        """Store a pending job's execution, then its queue item; wakes waiting claimers. (Reached
        through `Engine.submit`, which has checked the request and that the engine takes work.)"""
        payload = dict(request.payload or {})
        job_type = str(payload.get("type", ""))
        job_id = new_id()
        argv = [str(payload.get("binary_url", "")), *(str(a) for a in payload.get("arguments") or [])]
        labels = {**request.labels, JOB_LABEL: job_id, TYPE_LABEL: job_type}
        execution = Execution(
            id=job_id,
            name=replace_surrogates(request.name or job_type or "job"),
            kind=ExecutionKind.JOB,
            command=replace_surrogates(shlex.join(argv)),
            environment=replace_in({str(k): str(v) for k, v in request.env.items()}),
            user=replace_surrogates(request.user or ""),
            tags=replace_in(list(request.tags)),
            metadata={**replace_in(dict(request.metadata)), ATTEMPTS_KEY: []},
            priority=request.priority,
            source=replace_surrogates(request.source),
            labels=replace_in(labels),
        )
        branch = Step(id=new_id(), execution_id=job_id, name=BRANCH_NAME, kind=StepKind.BRANCH, index=-1,
                      target=BRANCH_NAME)
        await self.hub.publish(ExecutionCreated(execution.snapshot(), (branch.snapshot(),)))
        await self.writer.stored(job_id)
        try:
            await self.store.enqueue(JOB_QUEUE, payload, priority=request.priority,
                                     max_attempts=max(request.max_attempts, 1),
                                     labels={JOB_LABEL: job_id, TYPE_LABEL: job_type},
                                     execution_id=job_id, item_id=job_id, created_at=execution.created_at)
        except BaseException:
            state = ExecutionState(execution, [branch], self.hub, Masker())
            await state.finish_step(branch, StepStatus.SKIPPED)
            await state.finish(ExecutionStatus.FAILED, error="the job could not be queued")
            raise
        self._wake()
        return execution.snapshot()

    # -- workers ------------------------------------------------------------------------------
    async def claim(self, worker: str, address: str = "") -> Claimed | None:
        """The oldest pending job of the highest priority, now running for `worker`; None when
        none waits. The claim is committed (the store's guarded statement) before this returns; the
        execution's move to running follows through the store writer, as any event does."""
        while True:
            item = await self._claim_item(worker)
            if item is None:
                return None
            async with self._lock(item.id):
                # no barrier: whatever changed this execution before waited for the store
                execution = await self.store.get_execution(item.execution_id or item.id)
                if execution is None:  # deleted while it waited: nothing to run
                    await self.store.finish(item.id, worker, QueueStatus.FAILED,
                                            {"error_message": "its execution was deleted"})
                    continue
                _take(execution, item, address)
                snapshot = self._claimed[item.id] = execution.snapshot()
                await self.hub.publish(ExecutionStarted(snapshot))
            return Claimed(item, snapshot)

    async def _claim_item(self, worker: str) -> QueueItem | None:
        """The store's claim for `worker`, batched with the claims made meanwhile."""
        waiter: asyncio.Future[QueueItem | None] = asyncio.get_running_loop().create_future()
        self._claimers.append((worker, waiter))
        if self._claiming is None or self._claiming.done():
            self._claiming = asyncio.create_task(self._claim_batches(), name="executr-claims")
        return await waiter

    async def _claim_batches(self) -> None:
        while self._claimers:
            batch, self._claimers = self._claimers, []
            try:
                items = await self.store.claim_many([JOB_QUEUE], [worker for worker, _ in batch])
            except Exception as exc:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for (_, waiter), item in zip(batch, items, strict=True):
                if not waiter.done():
                    waiter.set_result(item)
                # else its claimer went away: the item goes back to the queue when its heartbeat is due

    def work_signal(self) -> asyncio.Event:
        """The event the next submission (or requeue) sets. Take it BEFORE a claim that may find
        nothing, and wait on it after (`wait_for_work`): a job queued between the two then still
        wakes the claimer, where an event taken after the claim would miss it."""
        return self._work

    async def wait_for_work(self, timeout: float, signal: asyncio.Event | None = None) -> bool:
        """Wait until a job may be claimable (True) or `timeout` seconds passed (False); `signal`:
        the event taken (`work_signal`) before the claim that found nothing."""
        event = signal if signal is not None else self._work
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True

    async def heartbeat(self, job_id: str, worker: str) -> QueueItem:
        item = await self.store.heartbeat(job_id, worker)
        if item is None:
            raise await self._refusal(job_id, worker)
        return item

    async def stream_output(self, job_id: str, worker: str, pieces: Sequence[OutputPiece]) -> None:
        """Output of a running job from the worker that holds it (stepflow's extension): its lines
        and steps are published before this returns. NotFound, NotRunning, NotHolder as a heartbeat;
        OutputGap when a piece starts past what was received."""
        live = self._live.get(job_id)
        if live is None or live.worker != worker:
            item = await self.store.get_queue_item(job_id)
            if item is None or item.queue != JOB_QUEUE or item.status is not QueueStatus.RUNNING \
                    or item.worker != worker:
                raise await self._refusal(job_id, worker)
            async with self._lock(job_id):
                live = self._live.get(job_id)
                if live is None or live.worker != worker or live.attempt != item.attempt:
                    if live is not None:
                        await live.abort(f"attempt {live.attempt} ended: the job went to {worker}")
                    execution = await self._execution(item)
                    if execution is None or execution.status is not ExecutionStatus.RUNNING:
                        raise NotRunning(f"job {job_id} is not running")
                    state, branch = await self._state(execution, await self.store.count_log_lines(job_id))
                    if branch is None:
                        raise NotRunning(f"job {job_id} has no branch to log under")
                    if item.claimed_at is not None and branch.started_at is None:
                        branch.started_at = item.claimed_at
                    live = self._live[job_id] = await LiveJob.start(state, branch, worker, item.attempt,
                                                                    self.artifacts)
        await live.take(pieces)

    async def finish(self, job_id: str, worker: str, status: QueueStatus, report: JobReport) -> QueueItem:
        """End a running job as its worker reports (COMPLETED or FAILED): its output becomes its
        execution's log lines, the markers in it steps."""
        stdout, stderr = truncate_utf8(report.stdout), truncate_utf8(report.stderr)
        result = {"stdout": stdout, "stderr": stderr, "exit_code": report.exit_code,
                  "error_message": report.error_message}
        item = await self.store.finish(job_id, worker, status, result)
        if item is None:
            raise await self._refusal(job_id, worker)
        async with self._lock(job_id):
            execution = await self._execution(item)
            if execution is not None and not execution.status.is_terminal:
                if execution.status is ExecutionStatus.PENDING:
                    _take(execution, item)  # its claim's event was lost (the server stopped after the answer)
                try:
                    await self._replay(execution, item, stdout, stderr, report, status)
                except Exception:
                    # the job is finished (its queue item says so); its execution must not stay running
                    log.exception("job %s: its report could not be recorded", job_id)
                    await self.store.fail_execution(job_id, "its worker's report could not be recorded")
        return item

    async def cancel(self, job_id: str) -> QueueItem:
        """Cancel a pending job (NotPending when it runs or ended, NotFound when there is none)."""
        item = await self.store.cancel_queued(job_id)
        if item is None:
            raise NotFound(f"no job {job_id}")
        async with self._lock(job_id):
            execution = await self._execution(item)
            if item.status is not QueueStatus.CANCELLED or (execution is not None and execution.status.is_terminal):
                raise NotPending(f"job {job_id} is {item.status.value}: only a pending job can be cancelled")
            if execution is not None:
                state, branch = await self._state(execution)
                if branch is not None:
                    await state.finish_step(branch, StepStatus.CANCELLED, reason=AbortReason.USER)
                await state.finish(ExecutionStatus.CANCELLED, reason=AbortReason.USER,
                                   error="cancelled before a worker claimed it")
                await self.writer.barrier()
        return item

    async def requeue_stale(self, timeout: float) -> list[QueueItem]:
        """Running jobs with no heartbeat for `timeout` seconds: back to pending for another
        attempt, or failed past their last one."""
        items = await self.store.requeue_stale(JOB_QUEUE, utcnow() - timedelta(seconds=timeout))
        for item in items:
            async with self._lock(item.id):
                execution = await self._execution(item)
                now = await self.store.get_queue_item(item.id)
                if execution is None or now is None or now.attempt != item.attempt or now.status is not item.status:
                    continue  # claimed again meanwhile: the claim ended the attempt
                if execution.status is ExecutionStatus.PENDING and not _shows_claim(execution, item):
                    _take(execution, item)  # its claim's event was lost (the server stopped after the answer)
                if execution.status is not ExecutionStatus.RUNNING:
                    continue
                message = f"no heartbeat from {item.worker} for {timeout:g}s"
                live = self._live.pop(item.id, None)
                if live is not None:
                    await live.abort(f"attempt {live.attempt} ended: {message}")
                    execution = await self._execution(item) or execution
                _end_attempt(execution, "timed out", message)
                if item.status is QueueStatus.PENDING:
                    move_execution(execution, ExecutionStatus.PENDING)
                    execution.labels.pop(EXECUTOR_LABEL, None)
                    await self.hub.publish(ExecutionUpdated(execution.snapshot()))
                else:
                    state, branch = await self._state(execution)
                    if branch is not None:
                        await state.finish_step(branch, StepStatus.SKIPPED)
                    await state.finish(ExecutionStatus.FAILED, error=f"{message}, on its last attempt "
                                                                     f"({item.attempt} of {item.max_attempts})")
                await self.writer.barrier()
        if any(i.status is QueueStatus.PENDING for i in items):
            self._wake()
        return items

    async def close(self) -> None:
        """The engine stops: the pumps of streamed output stop where they are (the jobs stay
        running on their workers; the next server takes their output on)."""
        lives, self._live = list(self._live.values()), {}
        for live in lives:
            live.pump.cancel()
        await asyncio.gather(*(live.pump for live in lives), return_exceptions=True)

    # -- reads --------------------------------------------------------------------------------
    async def get(self, job_id: str) -> tuple[QueueItem, Execution | None] | None:
        item = await self.store.get_queue_item(job_id)
        if item is None or item.queue != JOB_QUEUE:
            return None
        execution = await self.store.get_execution(item.execution_id or job_id)
        return item, None if execution is None else self.as_claimed(execution)

    def as_claimed(self, stored: Execution) -> Execution:
        """The execution as read from the store, or, while the store does not show the job's last
        claim yet (its event on the way), as that claim left it."""
        claimed = self._claimed.get(stored.id)
        if claimed is None:
            return stored
        if len(attempts_of(stored)) >= len(attempts_of(claimed)):
            del self._claimed[stored.id]  # stored: the store's row is the truth again
            return stored
        return claimed.snapshot()

    async def list_jobs(self, *, status: QueueStatus | None = None, job_type: str | None = None,
                   priority: int | None = None, worker: str | None = None, limit: int = 100,
                   offset: int = 0) -> tuple[list[QueueItem], int]:
        labels = ((TYPE_LABEL, job_type),) if job_type is not None else ()
        return await self.store.list_queue_items(QueueFilter(queue=JOB_QUEUE, status=status, worker=worker,
                                                             priority=priority, labels=labels,
                                                             limit=limit, offset=offset))

    async def counts(self) -> list[QueueCount]:
        return [c for c in await self.store.queue_counts() if c.queue == JOB_QUEUE]

    async def executors(self) -> dict[str, int]:
        """How many jobs each executor runs now (one count, where `running` reads every job)."""
        return await self.store.queue_workers(JOB_QUEUE, QueueStatus.RUNNING)

    async def running(self) -> list[QueueItem]:
        """Every running job (newest first)."""
        found: list[QueueItem] = []
        while True:
            page, total = await self.list_jobs(status=QueueStatus.RUNNING, limit=500, offset=len(found))
            found += page
            if not page or len(found) >= total:
                return found

    async def healthy(self) -> None:
        """Raises when the store cannot be read."""
        await self.store.data_version()

    # -- helpers ------------------------------------------------------------------------------
    def _wake(self) -> None:
        work, self._work = self._work, asyncio.Event()
        work.set()

    @contextlib.asynccontextmanager
    async def _lock(self, job_id: str) -> AsyncIterator[None]:
        """One change of a job's execution at a time (each reads it, changes it, publishes it)."""
        lock, users = self._locks.get(job_id) or (asyncio.Lock(), 0)
        self._locks[job_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[job_id]
            if users <= 1:
                del self._locks[job_id]
            else:
                self._locks[job_id] = (lock, users - 1)

    async def _execution(self, item: QueueItem) -> Execution | None:
        """The job's execution as stored once everything published so far is (a claim does not
        wait for its event to be written)."""
        await self.writer.barrier()
        self._claimed.pop(item.id, None)  # stored now
        return await self.store.get_execution(item.execution_id or item.id)

    async def _state(self, execution: Execution, first_seq: int = 0) -> tuple[ExecutionState, Step | None]:
        steps = await self.store.get_steps(execution.id)
        branch = next((s for s in steps if s.kind is StepKind.BRANCH), None)
        return ExecutionState(execution, steps, self.hub, Masker(), first_seq=first_seq), branch

    async def _refusal(self, job_id: str, worker: str) -> Exception:
        item = await self.store.get_queue_item(job_id)
        if item is None or item.queue != JOB_QUEUE:
            return NotFound(f"no job {job_id}")
        if item.status is not QueueStatus.RUNNING:
            return NotRunning(f"job {job_id} is {item.status.value}, not running")
        return NotHolder(f"job {job_id} is held by executor {item.worker!r}, not {worker!r}")

    async def _replay(self, execution: Execution, item: QueueItem, stdout: str, stderr: str, report: JobReport,
                      status: QueueStatus) -> None:
        ok = status is QueueStatus.COMPLETED
        worker = item.worker or ""
        error = None if ok else (report.error_message or f"the job failed on {worker}")
        exit_code = report.exit_code if report.exit_code is not None else (0 if ok else 1)
        live = self._live.pop(execution.id, None)
        if live is not None and live.worker == worker and live.attempt == item.attempt:
            # its output came as it ran: what of the report it did not bring ends it
            await live.end(stdout, stderr, exit_code)
            state = live.state
            _end_attempt(state.execution, status.value, error)
            await state.finish_step(live.branch, StepStatus.COMPLETED if ok else StepStatus.FAILED,
                                    exit_code=exit_code, error=error)
            await state.finish(ExecutionStatus.COMPLETED if ok else ExecutionStatus.FAILED, exit_code=exit_code,
                               error=error)
            await self.writer.barrier()
            return
        if live is not None:
            await live.abort(f"attempt {live.attempt} ended")
            execution = await self._execution(item) or execution
        _end_attempt(execution, status.value, error)
        state, branch = await self._state(execution, await self.store.count_log_lines(execution.id))
        if branch is not None:
            branch.target = branch.name = worker or BRANCH_NAME
            await state.start_step(branch)
            if item.claimed_at is not None:
                branch.started_at = item.claimed_at
            pump = CommandPump(state, branch, ReportedRunner(ReportedCommand(stdout, stderr, exit_code), worker),
                               CommandSpec(execution_id=execution.id), self.artifacts)
            await pump.run()
            await state.finish_step(branch, StepStatus.COMPLETED if ok else StepStatus.FAILED,
                                    exit_code=exit_code, error=error)
        await state.finish(ExecutionStatus.COMPLETED if ok else ExecutionStatus.FAILED, exit_code=exit_code,
                           error=error)
        await self.writer.barrier()


def _take(execution: Execution, item: QueueItem, address: str = "") -> None:
    """The execution as its queue item's claim leaves it: running on the item's worker, a new
    attempt (the one before, if still open, timed out: claimed again before the stale check got to it)."""
    worker = item.worker or ""
    if execution.status is ExecutionStatus.PENDING:
        move_execution(execution, ExecutionStatus.RUNNING, at=item.claimed_at)
    _end_attempt(execution, "timed out", "no heartbeat from its executor")
    execution.targets = [worker]
    execution.labels[EXECUTOR_LABEL] = worker
    attempts = list(execution.metadata.get(ATTEMPTS_KEY) or [])
    attempts.append({"executor_id": worker, "executor_ip": address,
                     "started_at": (item.claimed_at or utcnow()).isoformat(),
                     "ended_at": None, "status": "running"})
    execution.metadata[ATTEMPTS_KEY] = attempts


def _shows_claim(execution: Execution, item: QueueItem) -> bool:
    """Whether the stored execution has the item's last claim (the claim's event was lost if the
    process that answered the claim stopped before the store writer wrote it)."""
    return len(attempts_of(execution)) >= item.attempt


def _end_attempt(execution: Execution, status: str, error: str | None) -> None:
    attempts = list(execution.metadata.get(ATTEMPTS_KEY) or [])
    if attempts and attempts[-1].get("ended_at") is None:
        last = dict(attempts[-1])
        last.update(ended_at=utcnow().isoformat(), status=status)
        if error:
            last["error_message"] = error
        attempts[-1] = last
    execution.metadata[ATTEMPTS_KEY] = attempts


def job_fields(item: QueueItem) -> Mapping[str, Any]:
    """The job's fields as submitted (its queue item's payload)."""
    return item.payload if isinstance(item.payload, dict) else {}


def attempts_of(execution: Execution | None) -> Sequence[Mapping[str, Any]]:
    if execution is None:
        return []
    return [a for a in execution.metadata.get(ATTEMPTS_KEY) or [] if isinstance(a, dict)]

"""What runners do, as it happens: their log (lifecycle entries and their jobs' output lines), the
sampled cpu/memory/active-jobs series behind `/metrics`, and the engine's events turned into log
entries, Server-Sent Events and WebSocket messages.

Both are kept in memory, bounded per runner (`MAX_LOG`, `MAX_SAMPLES`): a restart of the server
starts them afresh (the jobs' own output stays in the store, as every execution's does)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil

from api_compat.rustci.wire import rfc3339
from api_compat.sse import SseHub
from engine.client import EngineClient
from engine.events import ExecutionCreated, ExecutionFinished, ExecutionStarted, LinesLogged, StepAdded
from engine.model import AbortReason, Execution

log = logging.getLogger(__name__)

#: log entries kept per runner
MAX_LOG = 10_000
#: samples kept per runner (30 days at one a minute)
MAX_SAMPLES = 43_200
#: seconds between samples
SAMPLE_EVERY = 60.0
#: the execution label naming a job's runner
RUNNER_LABEL = "rustci.runner"
#: the execution label holding a job's timeout (seconds, the whole job's)
TIMEOUT_LABEL = "rustci.timeout"
JOB_PREFIX = "job_"


def job_id_of(execution_id: str) -> str:
    return JOB_PREFIX + execution_id


@dataclass(slots=True, frozen=True)
class Sample:
    at: datetime
    cpu: float
    memory: float
    active_jobs: int


def machine_load() -> tuple[float, float, float]:
    """cpu %, memory %, disk % (of the data directory's file system is the caller's: here /) now."""
    return psutil.cpu_percent(None), psutil.virtual_memory().percent, psutil.disk_usage("/").percent


class Activity:
    def __init__(self, sse: SseHub, *, sample_every: float = SAMPLE_EVERY) -> None:
        self.sse = sse
        self.sample_every = sample_every
        self.logs: dict[str, deque[dict[str, Any]]] = {}
        self.samples: dict[str, deque[Sample]] = {}
        #: execution id -> runner id, for the jobs seen
        self.runner_of: dict[str, str] = {}
        #: execution id -> its steps' names by id, while it runs
        self._step_names: dict[str, dict[str, str]] = {}
        #: notified whenever one of the runners' jobs ends
        self.changed = asyncio.Condition()
        #: (message) -> None: the WebSocket hub's broadcast
        self.broadcast: Callable[[dict[str, Any]], None] = lambda _message: None
        #: runner id -> its jobs running now (the desk's)
        self.active_jobs: Callable[[str], int] = lambda _runner: 0
        #: running jobs' timeouts (execution id -> the timer that cancels it)
        self._deadlines: dict[str, asyncio.TimerHandle] = {}
        self._engine: EngineClient | None = None
        psutil.cpu_percent(None)  # the first reading is against this one

    # -- log ---------------------------------------------------------------------------------------
    def log(self, runner_id: str, level: str, message: str, context: dict[str, Any] | None = None,
            at: datetime | None = None) -> None:
        moment = at or datetime.now(UTC)
        entry = {"timestamp": rfc3339(moment), "level": level, "message": message, "context": context or {}}
        entries = self.logs.setdefault(runner_id, deque(maxlen=MAX_LOG))
        entries.append({**entry, "_at": moment})
        self.sse.publish(runner_id, json.dumps(entry), event="log")

    def forget(self, runner_id: str) -> None:
        self.logs.pop(runner_id, None)
        self.samples.pop(runner_id, None)

    # -- samples -----------------------------------------------------------------------------------
    def sample(self, runner_id: str) -> Sample:
        cpu, memory, _disk = machine_load()
        taken = Sample(datetime.now(UTC), cpu, memory, self.active_jobs(runner_id))
        self.samples.setdefault(runner_id, deque(maxlen=MAX_SAMPLES)).append(taken)
        return taken

    async def sample_forever(self, runners: Callable[[], list[str]]) -> None:
        while True:
            await asyncio.sleep(self.sample_every)
            for runner_id in runners():
                self.sample(runner_id)

    # -- the engine's events -----------------------------------------------------------------------
    def track(self, execution: Execution) -> str | None:
        runner_id = execution.labels.get(RUNNER_LABEL)
        if runner_id is not None:
            self.runner_of[execution.id] = runner_id
        return runner_id

    def _start_deadline(self, execution: Execution) -> None:
        """A job with a timeout is cancelled (reason timeout) when it runs longer."""
        raw = execution.labels.get(TIMEOUT_LABEL)
        engine = self._engine
        if raw is None or engine is None or execution.started_at is None:
            return
        left = float(raw) - (datetime.now(UTC) - execution.started_at).total_seconds()

        def expire() -> None:
            self._deadlines.pop(execution.id, None)
            runner_id = self.runner_of.get(execution.id, "")
            self.log(runner_id, "error", f"Job timed out after {float(raw):g}s: {job_id_of(execution.id)}",
                     {"job_id": job_id_of(execution.id)})
            task = asyncio.ensure_future(engine.cancel(execution.id, AbortReason.TIMEOUT))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # it may have ended meanwhile

        self._deadlines[execution.id] = asyncio.get_running_loop().call_later(max(left, 0.0), expire)

    def close(self) -> None:
        for handle in self._deadlines.values():
            handle.cancel()
        self._deadlines.clear()

    async def follow_engine(self, engine: EngineClient) -> None:
        self._engine = engine
        subscription = engine.subscribe(maxsize=20_000)
        try:
            async for event in subscription:
                try:
                    await self._on_event(event)
                except Exception:
                    log.exception("RustCI: handling an engine event failed")
        finally:
            subscription.close()

    async def _on_event(self, event: object) -> None:
        if isinstance(event, ExecutionCreated):
            if self.track(event.execution) is not None:
                self._step_names[event.execution.id] = {step.id: step.name for step in event.steps}
        elif isinstance(event, StepAdded):
            names = self._step_names.get(event.step.execution_id)
            if names is not None:
                names[event.step.id] = event.step.name
        elif isinstance(event, ExecutionStarted):
            runner_id = self.runner_of.get(event.execution.id) or self.track(event.execution)
            if runner_id is not None:
                job_id = job_id_of(event.execution.id)
                self.log(runner_id, "info", f"Job started: {job_id}", {"job_id": job_id})
                self.broadcast(_job_message("job_started", runner_id, event.execution))
                self._start_deadline(event.execution)
                self.sample(runner_id)
        elif isinstance(event, LinesLogged):
            runner_id = self.runner_of.get(event.exec_id)
            if runner_id is not None:
                level = "error" if event.stream == "stderr" else "info"
                context: dict[str, Any] = {"job_id": job_id_of(event.exec_id)}
                step = self._step_names.get(event.exec_id, {}).get(event.step_id or "")
                if step is not None:
                    context["step"] = step
                for line in event.lines:
                    self.log(runner_id, level, line, context, event.timestamp)
        elif isinstance(event, ExecutionFinished):
            execution = event.execution
            runner_id = self.runner_of.get(execution.id)
            self._step_names.pop(execution.id, None)
            if (deadline := self._deadlines.pop(execution.id, None)) is not None:
                deadline.cancel()
            if runner_id is not None:
                job_id = job_id_of(execution.id)
                status = execution.status.value
                level = "info" if status == "completed" else "error"
                text = f"Job {status}: {job_id}" + (f" ({execution.error_message})" if execution.error_message else "")
                self.log(runner_id, level, text, {"job_id": job_id, "exit_code": execution.exit_code})
                self.broadcast(_job_message("job_completed", runner_id, execution))
                self.sample(runner_id)
                async with self.changed:
                    self.changed.notify_all()

    async def wait_until(self, done: Callable[[], Any], timeout: float) -> bool:
        """Until `done()` (re-checked as jobs end; it may be a coroutine function), at most `timeout` s."""
        async def check() -> bool:
            result = done()
            return bool(await result) if asyncio.iscoroutine(result) else bool(result)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not await check():
                    async with self.changed:
                        await self.changed.wait()
                return True
        return await check()


def _job_message(kind: str, runner_id: str, execution: Execution) -> dict[str, Any]:
    from api_compat.rustci.jobs_view import job_status

    return {"type": kind, "runner_id": runner_id, "job_id": job_id_of(execution.id), "name": execution.name,
            "status": job_status(execution).value, "exit_code": execution.exit_code,
            "timestamp": rfc3339(datetime.now(UTC))}

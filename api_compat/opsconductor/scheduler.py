"""Scheduled jobs: a job created with `scheduled_at` waits in the store (`scheduled`) and starts at
that time on its `target_ids`; after a restart the jobs still waiting are read again, and those whose
time passed while the server was down start at once. Taking a due job is one guarded statement, so
of two servers on one store only one starts it. The loop sleeps until the next job's time (at most a
minute, for jobs another server on the store scheduled) and is woken by a new one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from api_compat.opsconductor.keys import OpsStore
from engine.store.opsconductor import OpsJob

log = logging.getLogger(__name__)
#: the longest the loop sleeps without looking at the store again
MAX_SLEEP = 60.0


class Scheduler:
    def __init__(self, store: OpsStore, run: Callable[[OpsJob], Awaitable[object]]) -> None:
        self.store = store
        self._run = run
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="opsconductor-scheduler")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._runs) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self._start_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("starting the scheduled jobs failed")
                delay = MAX_SLEEP
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _start_due(self) -> float:
        """Start what is due; the seconds until the next one (at most MAX_SLEEP)."""
        now = datetime.now(UTC)
        delay = MAX_SLEEP
        for job in await self.store.scheduled_ops_jobs():
            assert job.scheduled_at is not None
            wait = (job.scheduled_at - now).total_seconds()
            if wait > 0:
                delay = min(delay, wait)
                continue
            if await self.store.take_scheduled_job(job.id):
                task = asyncio.create_task(self._start(job), name=f"opsconductor-job-{job.serial}")
                self._runs.add(task)
                task.add_done_callback(self._runs.discard)
        return max(delay, 0.0)

    async def _start(self, job: OpsJob) -> None:
        try:
            await self._run(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # the execution is recorded failed with why (launch.start_execution)
            log.warning("scheduled job %s did not start: %s", job.serial, exc)

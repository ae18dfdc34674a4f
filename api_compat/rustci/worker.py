"""`stepflow worker --rustci-runner NAME`: the executr worker (`api_compat.executr.worker`) fed by a
RustCI runner of type `worker` instead of the executr queue.

The worker registers the runner (type `worker`, its `max_concurrent_jobs` the worker's concurrency),
or serves one an administrator registered (NAME a `runner_…` id, `--token` its registration token),
then claims the runner's steps from `/api/runners/{id}/worker/jobs/claim` (long poll): each step's
`run` through `sh -c` with the job's environment (and PATH) in a fresh folder, its output streamed
with offsets, heartbeats while it runs, its exit reported. Slots, heartbeats, live output, job
folders and SIGTERM handling are the executr worker's.
"""

from __future__ import annotations

import asyncio
import re
import socket

import aiohttp

from api_compat.executr.client import ExecutrClient, ExecutrError, Job
from api_compat.executr.job_dirs import JobDir
from api_compat.executr.worker import DEFAULT_PATH, Outcome, Worker, WorkerError, WorkerOptions, _spawn

_RUNNER_ID = re.compile(r"runner_[0-9a-f-]{36}")


class RunnerWorker(Worker):
    def __init__(self, options: WorkerOptions, runner: str) -> None:
        super().__init__(options)
        self.runner = runner
        self.runner_id = runner if _RUNNER_ID.fullmatch(runner) else ""

    async def run(self) -> int:
        await self._register()
        self.client = ExecutrClient(self.options.server, token=self.options.token,
                                    connections=max(10, self.options.concurrency * 2 + 4),
                                    api=f"/api/runners/{self.runner_id}/worker")
        return await super().run()

    async def _register(self) -> None:
        """Register the runner NAME (unless NAME is a runner's id); its registration token is the
        worker's from then on."""
        if self.runner_id:
            return
        base = self.client.base_url
        headers = {"Authorization": f"Bearer {self.options.token}"} if self.options.token else {}
        body = {"name": self.runner, "type": "worker", "host": socket.gethostname(),
                "capabilities": ["shell"], "metadata": {"max_concurrent_jobs": self.options.concurrency,
                                                        "worker": self.executor_id}}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                async with http.post(f"{base}/api/runners/register", json=body, headers=headers) as resp:
                    answer = await resp.json(content_type=None)
                    status = resp.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise WorkerError(f"cannot register runner {self.runner!r} at {base}: {exc}") from None
        if status != 201 or not isinstance(answer, dict) or "runner_id" not in answer:
            raise WorkerError(f"{base} refused to register runner {self.runner!r}: {status} {answer}")
        self.runner_id = str(answer["runner_id"])
        self.options.token = str(answer["registration_token"])
        # the line tests and people look for: the runner's id, to submit jobs to
        print(f"runner_id {self.runner_id}", flush=True)
        self.say(f"registered runner {self.runner!r} as {self.runner_id}")

    def _no_api(self, exc: ExecutrError) -> str:
        return f"{self.client.base_url}: runner {self.runner_id} is not a worker runner there ({exc.message})"

    async def _run(self, job: Job, lost: asyncio.Event) -> Outcome:
        """One step: its `run` through its shell (`sh -c`), in a fresh folder."""
        command_id = str(job.get("id", ""))
        job_dir = JobDir(self.options.work_dir, command_id)
        try:
            argv = job.get("argv")
            if not isinstance(argv, list) or not argv:
                argv = [str(job.get("shell") or "sh"), "-c", str(job.get("script") or "")]
            env = {str(k): str(v) for k, v in (job.get("env") or {}).items()}
            env.setdefault("PATH", DEFAULT_PATH)
            try:
                proc = await _spawn([str(a) for a in argv], job_dir.work, env)
            except OSError as exc:
                return Outcome(127, f"cannot start {argv[0]}: {exc.strerror or exc}")
            return await self._supervise(proc, command_id, lost)
        finally:
            job_dir.remove()

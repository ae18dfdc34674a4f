"""The runners: registered in the store's registry (kind `rustci_runner`, named by their id), their
life cycle, and their jobs, each an ordinary workflow execution submitted through the engine.

A runner is an admission group of the engine (`engine.admission.GROUP_LABEL`): at most its
`max_concurrent_jobs` of its jobs run at once, the others wait in the engine's queue (pending, as
`stepflow ls` shows them); a stopped runner's limit is 0, so its queue is kept but not taken from."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from api_compat.rustci.activity import JOB_PREFIX, RUNNER_LABEL, TIMEOUT_LABEL, Activity, job_id_of
from api_compat.rustci.errors import RustciError, not_found
from api_compat.rustci.jobs_view import duration
from api_compat.rustci.jobspec import docker_endpoint, workflow_text
from api_compat.rustci.wire import (
    RunnerConfigUpdate,
    RunnerJobRequest,
    RunnerRegisterRequest,
    RunnerStatus,
    RunnerUpdateRequest,
    rfc3339,
)
from engine.admission import GROUP_LABEL
from engine.client import EngineClient
from engine.errors import Conflict
from engine.model import AbortReason, Execution, ExecutionKind, ExecutionStatus
from engine.store import Registry, RegistryEntry
from engine.submission import SubmitRequest

log = logging.getLogger(__name__)

KIND = "rustci_runner"
DEFAULT_MAX_JOBS = 4
DEFAULT_CONFIG: dict[str, Any] = {"max_concurrent_jobs": DEFAULT_MAX_JOBS, "job_timeout": 3600,
                                  "cleanup_policy": "always", "resource_limits": {}, "docker_config": {}}
#: a status, and the status each control command leaves it in
TRANSITIONS: dict[str, dict[RunnerStatus, RunnerStatus]] = {
    "start": {RunnerStatus.ACTIVE: RunnerStatus.ACTIVE, RunnerStatus.INACTIVE: RunnerStatus.ACTIVE,
              RunnerStatus.ERROR: RunnerStatus.ACTIVE},
    "stop": {RunnerStatus.ACTIVE: RunnerStatus.INACTIVE, RunnerStatus.INACTIVE: RunnerStatus.INACTIVE,
             RunnerStatus.ERROR: RunnerStatus.INACTIVE},
}
#: recent jobs whose durations estimate a start time
_RECENT = 20
_DEFAULT_DURATION = 30.0


def now() -> datetime:
    return datetime.now(UTC)


def execution_id_of(job_id: str) -> str | None:
    raw = job_id.removeprefix(JOB_PREFIX)
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


class RunnerDesk:
    def __init__(self, engine: EngineClient, registry: Registry, data_dir: Path, activity: Activity) -> None:
        self.engine = engine
        self.registry = registry
        self.data_dir = data_dir
        self.activity = activity
        activity.active_jobs = self.running_count
        self._ids: list[str] = []
        #: sha256 of each runner's registration token -> the runner (for its own calls)
        self._token_owners: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
        self._restarting: dict[str, asyncio.Task[None]] = {}

    # -- the engine's admission groups ----------------------------------------------------------
    def _set_limit(self, runner_id: str, limit: int | None) -> None:
        setter = getattr(self.engine, "set_group_limit", None)
        if setter is not None:
            setter(runner_id, limit)

    def running_count(self, runner_id: str) -> int:
        counter = getattr(self.engine, "group_running", None)
        return int(counter(runner_id)) if counter is not None else 0

    def _apply_limit(self, data: dict[str, Any]) -> None:
        active = data.get("status") == RunnerStatus.ACTIVE
        self._set_limit(data["id"], int(data["config"]["max_concurrent_jobs"]) if active else 0)

    async def load(self) -> None:
        """At start: every stored runner's limit set in the engine, its jobs known by id."""
        for entry in await self.all():
            self._ids.append(entry.name)
            self._remember_token(entry.name, entry.data)
            self._apply_limit(entry.data)
            for execution_id in entry.data.get("jobs") or {}:
                self.activity.runner_of[execution_id] = entry.name

    def runner_ids(self) -> list[str]:
        return list(self._ids)

    # -- the registry ------------------------------------------------------------------------------
    async def all(self) -> list[RegistryEntry]:
        found: list[RegistryEntry] = []
        while True:
            page, total = await self.registry.list_registered(KIND, limit=500, offset=len(found))
            found += page
            if not page or len(found) >= total:
                return found

    async def get(self, runner_id: str) -> RegistryEntry:
        entry = await self.registry.get_registered(KIND, name=runner_id)
        if entry is None:
            raise not_found(runner_id)
        return entry

    async def _patch(self, entry: RegistryEntry, patch: dict[str, Any]) -> RegistryEntry:
        updated = await self.registry.update_registered(KIND, entry.id, patch)
        if updated is None:
            raise not_found(entry.name)
        return updated

    async def register(self, req: RunnerRegisterRequest) -> tuple[str, str]:
        if req.type.value == "kubernetes":
            raise RustciError(422, "runner type 'kubernetes' is not supported yet (docker, native, local, ssh, worker are)",
                              "INVALID_REQUEST", {"type": "kubernetes"})
        runner_id = f"runner_{uuid.uuid4()}"
        token = f"reg_token_{secrets.token_urlsafe(24)}"
        config = dict(DEFAULT_CONFIG)
        max_jobs = req.metadata.get("max_concurrent_jobs")
        if isinstance(max_jobs, int) and not isinstance(max_jobs, bool) and 0 <= max_jobs <= 1000:
            config["max_concurrent_jobs"] = max_jobs
        stamp = rfc3339(now())
        data = {"id": runner_id, "name": req.name, "type": req.type.value, "host": req.host, "port": req.port,
                "capabilities": req.capabilities, "metadata": req.metadata, "tags": req.tags,
                "resources": req.resources.model_dump(exclude_none=True), "status": RunnerStatus.ACTIVE.value,
                "registered_at": stamp, "last_seen": stamp, "config": config, "config_updated_at": stamp,
                "inactive_seconds": 0.0, "stopped_at": None, "jobs": {},
                "registration_token_sha256": hashlib.sha256(token.encode()).hexdigest()}
        await self.registry.register(KIND, runner_id, data)
        self._ids.append(runner_id)
        self._remember_token(runner_id, data)
        self._apply_limit(data)
        self.activity.log(runner_id, "info", f"Runner registered: {req.name} ({req.type.value})")
        self.activity.sample(runner_id)
        return runner_id, token

    def _remember_token(self, runner_id: str, data: dict[str, Any]) -> None:
        digest = data.get("registration_token_sha256")
        if isinstance(digest, str) and digest:
            self._token_owners[digest] = runner_id

    def token_owner(self, token: str) -> str | None:
        """The runner whose registration token `token` is (its own calls may use it), or None."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        # a dict lookup by a hash of the secret: the time taken says nothing about the token
        return self._token_owners.get(digest)

    async def update(self, runner_id: str, req: RunnerUpdateRequest) -> None:
        entry = await self.get(runner_id)
        patch: dict[str, Any] = {k: v for k, v in req.model_dump(exclude_none=True).items() if k != "metadata"}
        if req.metadata is not None:
            patch["metadata"] = req.metadata  # merged: keys not given are kept
            max_jobs = req.metadata.get("max_concurrent_jobs")
            if isinstance(max_jobs, int) and not isinstance(max_jobs, bool) and 0 <= max_jobs <= 1000:
                patch["config"] = {"max_concurrent_jobs": max_jobs}
        patch["last_seen"] = rfc3339(now())
        updated = await self._patch(entry, patch)
        self._apply_limit(updated.data)

    async def delete(self, runner_id: str, *, force: bool) -> int:
        """Unregister; its queued and running jobs are cancelled with `force`, else a 409."""
        entry = await self.get(runner_id)
        active = [e for e in await self.jobs(entry) if not e.status.is_terminal]
        if active and not force:
            raise RustciError(409, f"runner {runner_id} has {len(active)} active job(s): stop them or "
                                   "delete with force=true", "CONFLICT",
                              {"runner_id": runner_id, "active_jobs": [job_id_of(e.id) for e in active]})
        self._set_limit(runner_id, 0)  # nothing more starts while the others are cancelled
        for execution in active:
            await self._cancel(execution.id)
        await self.registry.unregister(KIND, entry.id)
        self._set_limit(runner_id, None)
        workers = getattr(self.engine, "workers", None)
        if workers is not None:  # a worker runner's: its workers' heartbeats are forgotten
            workers.forget(runner_id)
        if runner_id in self._ids:
            self._ids.remove(runner_id)
        self._token_owners = {d: r for d, r in self._token_owners.items() if r != runner_id}
        self.activity.forget(runner_id)
        return len(active)

    # -- jobs --------------------------------------------------------------------------------------
    async def jobs(self, entry: RegistryEntry) -> list[Execution]:
        """Its jobs, newest first (those deleted from the history are left out)."""
        found = []
        for execution_id in entry.data.get("jobs") or {}:
            execution = await self.engine.get_execution(execution_id)
            if execution is not None:
                found.append(execution)
        found.sort(key=lambda e: e.created_at, reverse=True)
        return found

    async def submit(self, runner_id: str, job: RunnerJobRequest) -> tuple[Execution, datetime]:
        entry = await self.get(runner_id)
        data = entry.data
        if data.get("status") != RunnerStatus.ACTIVE:
            raise RustciError(409, f"runner {runner_id} is {data.get('status')}: it accepts no jobs (start it first)",
                              "RUNNER_UNAVAILABLE", {"runner_id": runner_id, "status": data.get("status")})
        workdir = self.data_dir / "rustci" / runner_id
        if data["type"] in ("local", "native"):
            await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        docker_host = await docker_endpoint(data) if data["type"] == "docker" else None
        history = await self.jobs(entry)
        labels = {GROUP_LABEL: runner_id, RUNNER_LABEL: runner_id}
        timeouts = [t for t in (job.timeout, data["config"].get("job_timeout")) if t]
        if timeouts:
            labels[TIMEOUT_LABEL] = f"{min(timeouts):g}"
        execution = await self.engine.submit(SubmitRequest(
            kind=ExecutionKind.WORKFLOW, source="rustci", workflow_text=workflow_text(job, data, docker_host, workdir),
            name=job.name, labels=labels,
        ))
        self.activity.runner_of[execution.id] = runner_id
        await self._patch(entry, {"jobs": {execution.id: rfc3339(execution.created_at)}, "last_seen": rfc3339(now())})
        self.activity.log(runner_id, "info", f"Job queued: {job_id_of(execution.id)}", {"job_id": job_id_of(execution.id)})
        return execution, self._estimate(data, history, execution)

    def _estimate(self, data: dict[str, Any], history: list[Execution], execution: Execution) -> datetime:
        """When it should start: now when it started or has room, else after the jobs ahead of it,
        at the recent jobs' mean duration per round of `max_concurrent_jobs`."""
        if execution.status is not ExecutionStatus.PENDING:
            return execution.started_at or now()
        if execution.admitted_at is not None:
            return now()  # admitted (its process is starting): it counts among the running already
        limit = int(data["config"]["max_concurrent_jobs"])
        durations = [d for e in history[:_RECENT * 3] if (d := duration(e)) is not None][:_RECENT]
        mean = sum(durations) / len(durations) if durations else _DEFAULT_DURATION
        ahead = sum(1 for e in history if e.status is ExecutionStatus.PENDING)
        running = self.running_count(data["id"])
        if limit <= 0:
            return now() + timedelta(seconds=mean * (ahead + 1))
        rounds = max(ahead + running - limit + 1, 0) / limit
        return now() + timedelta(seconds=mean * -(-rounds // 1))

    async def job(self, runner_id: str, job_id: str) -> Execution:
        entry = await self.get(runner_id)
        execution_id = execution_id_of(job_id)
        if execution_id is None or execution_id not in (entry.data.get("jobs") or {}):
            raise RustciError(404, f"job {job_id} not found on runner {runner_id}", "NOT_FOUND",
                              {"runner_id": runner_id, "job_id": job_id})
        execution = await self.engine.get_execution(execution_id)
        if execution is None:
            raise RustciError(404, f"job {job_id} not found", "NOT_FOUND", {"job_id": job_id})
        return execution

    async def _cancel(self, execution_id: str) -> None:
        try:
            await self.engine.cancel(execution_id, AbortReason.USER)
        except Conflict:
            pass  # it ended meanwhile

    async def cancel_job(self, runner_id: str, job_id: str) -> Execution:
        execution = await self.job(runner_id, job_id)
        if execution.status.is_terminal:
            raise RustciError(409, f"job {job_id} is {execution.status.value}, not queued or running", "CONFLICT",
                              {"job_id": job_id})
        await self._cancel(execution.id)
        return execution

    # -- configuration and control ---------------------------------------------------------------
    async def set_config(self, runner_id: str, update: RunnerConfigUpdate) -> bool:
        """Merged into the runner's; True when a restart is needed (never: limits apply to the next
        jobs, the concurrency at once)."""
        entry = await self.get(runner_id)
        patch = update.model_dump(exclude_none=True)
        updated = await self._patch(entry, {"config": patch, "config_updated_at": rfc3339(now())})
        self._apply_limit(updated.data)
        self.activity.log(runner_id, "info", "Configuration updated", {"changes": sorted(patch)})
        return False

    async def _transition(self, entry: RegistryEntry, command: str) -> tuple[str, str]:
        old = RunnerStatus(entry.data.get("status", "active"))
        new = TRANSITIONS[command][old]
        patch: dict[str, Any] = {"status": new.value, "last_seen": rfc3339(now())}
        if old is not RunnerStatus.INACTIVE and new is RunnerStatus.INACTIVE:
            patch["stopped_at"] = rfc3339(now())
        elif old is RunnerStatus.INACTIVE and new is not RunnerStatus.INACTIVE:
            stopped = entry.data.get("stopped_at")
            if stopped:
                since = (now() - datetime.fromisoformat(stopped.replace("Z", "+00:00"))).total_seconds()
                patch["inactive_seconds"] = float(entry.data.get("inactive_seconds") or 0) + max(since, 0.0)
            patch["stopped_at"] = None
        updated = await self._patch(entry, patch)
        self._apply_limit(updated.data)
        if old is not new:
            self.activity.broadcast({"type": "runner_status_change", "runner_id": entry.name, "old_status": old.value,
                                     "new_status": new.value, "timestamp": rfc3339(now())})
        return old.value, new.value

    async def start(self, runner_id: str) -> None:
        entry = await self.get(runner_id)
        pending = self._stopping.pop(runner_id, None)
        if pending is not None:
            pending.cancel()
        await self._transition(entry, "start")
        self.activity.log(runner_id, "info", "Runner started")

    async def stop(self, runner_id: str, *, graceful: bool, timeout: float, reason: str = "") -> None:
        """No job is accepted or taken from its queue from now on; running jobs are cancelled at
        once, or (graceful) when `timeout` seconds pass before they finish."""
        entry = await self.get(runner_id)
        await self._transition(entry, "stop")
        self.activity.log(runner_id, "info", "Runner stopped" + (f": {reason}" if reason else ""),
                          {"graceful": graceful, "timeout": timeout})
        previous = self._stopping.pop(runner_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._drain(runner_id, timeout if graceful else 0.0), name=f"rustci-stop-{runner_id}")
        self._stopping[runner_id] = task
        task.add_done_callback(lambda t: self._stopping.pop(runner_id, None) if self._stopping.get(runner_id) is t else None)

    async def _running(self, runner_id: str) -> list[Execution]:
        entry = await self.registry.get_registered(KIND, name=runner_id)
        if entry is None:
            return []
        # taken from the queue (admitted) counts: its processes may be starting
        return [e for e in await self.jobs(entry) if e.status is ExecutionStatus.RUNNING
                or (e.status is ExecutionStatus.PENDING and e.admitted_at is not None)]

    async def _drain(self, runner_id: str, timeout: float) -> None:
        try:
            if timeout > 0:
                async def none_running() -> bool:
                    return not await self._running(runner_id)

                if await self.activity.wait_until(none_running, timeout):
                    return
            for execution in await self._running(runner_id):
                self.activity.log(runner_id, "warn", f"Job cancelled: the runner stopped ({job_id_of(execution.id)})",
                                  {"job_id": job_id_of(execution.id)})
                await self._cancel(execution.id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("RustCI: stopping runner %s failed", runner_id)

    async def restart(self, runner_id: str, *, graceful: bool, timeout: float) -> None:
        """Stop (its running jobs finish, within `timeout` when graceful, else are cancelled), then
        start again, in the background."""
        await self.stop(runner_id, graceful=graceful, timeout=timeout, reason="restart")
        drain = self._stopping.get(runner_id)

        async def then_start() -> None:
            if drain is not None:
                await asyncio.shield(drain)
            entry = await self.registry.get_registered(KIND, name=runner_id)
            if entry is not None:
                await self._transition(entry, "start")
                self.activity.log(runner_id, "info", "Runner restarted")

        task = self._restarting[runner_id] = asyncio.create_task(then_start(), name=f"rustci-restart-{runner_id}")
        task.add_done_callback(lambda t: self._restarting.pop(runner_id, None) if self._restarting.get(runner_id) is t
                               else None)

    async def close(self) -> None:
        self.activity.close()
        for task in [*self._stopping.values(), *self._restarting.values()]:
            task.cancel()

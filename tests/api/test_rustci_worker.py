"""A RustCI runner served by `stepflow worker --rustci-runner` processes (type `worker`, ours): the
worker registers it, takes its jobs' steps from the queue, runs them (`sh -c`, the job's environment,
a fresh folder) and streams their output; the engine keeps the job (its steps in order, markers as
steps, max_concurrent_jobs, stop/start); a worker killed -9 shows in the runner's health and its step
fails or runs again per retry_count. Real `stepflow serve`, real `stepflow worker` processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import test_worker as base
from tests.api.rustci_helpers import RustCIRunnerClient, rustci_api
from tests.test_worker import HEARTBEAT_TIMEOUT, Workers
from tests.test_worker_stream import lines_of, monitor, steps_of, until

server = base.server
workers = base.workers
marks = base.marks
FINISHED = ("completed", "failed", "cancelled", "timeout")


async def call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def runner_named(http: aiohttp.ClientSession, server: str, name: str) -> dict[str, Any]:
    """The runner the worker registered under `name` (once it has)."""
    async def check() -> dict[str, Any] | None:
        status, body = await call(http, "GET", f"{server}/api/runners?type=worker")
        assert status == 200, body
        return next((r for r in body["runners"] if r["name"] == name), None)
    return dict(await until(check))


def start_worker(workers: Workers, name: str, *args: str) -> subprocess.Popen[bytes]:
    return workers.start(f"w-{name}", "--rustci-runner", name, "--wait", "2", *args)


async def submit(http: aiohttp.ClientSession, server: str, runner_id: str, *runs: str, **extra: Any) -> dict[str, Any]:
    body = {"name": extra.pop("name", "job"), "steps": [{"name": f"s{i}", "run": r} for i, r in enumerate(runs, 1)],
            **extra}
    status, answer = await call(http, "POST", f"{server}/api/runners/{runner_id}/jobs", json=body)
    assert status == 201, answer
    return dict(answer)


async def job_of(http: aiohttp.ClientSession, server: str, runner_id: str, job_id: str) -> dict[str, Any]:
    status, body = await call(http, "GET", f"{server}/api/runners/{runner_id}/jobs/{job_id}")
    assert status == 200, body
    return dict(body.get("job", body))


async def ended(http: aiohttp.ClientSession, server: str, runner_id: str, job_id: str,
                timeout: float = 30.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = await job_of(http, server, runner_id, job_id)
        return job if job["status"] in FINISHED else None
    return dict(await until(check, timeout))


def gate(marks: Path, name: str) -> str:
    return f'while [ ! -e "{marks}/{name}" ]; do sleep 0.02; done'


async def test_a_worker_runner_runs_a_jobs_steps_on_the_worker_with_its_lines_and_markers_live(
        server: str, workers: Workers, marks: Path) -> None:
    start_worker(workers, "ci-1", "--concurrency", "2")
    async with aiohttp.ClientSession() as http:
        runner = await runner_named(http, server, "ci-1")
        assert runner["type"] == "worker"
        rid = runner["id"]
        job = await submit(http, server, rid,
                           f'echo "STEP_START:prepare"; echo "first line"; pwd > "{marks}/cwd"; {gate(marks, "go")}; '
                           'echo "STEP_COMPLETE:prepare"',
                           'echo "$GREETING from the second step"',
                           environment={"GREETING": "hello"})
        execution_id = job["execution_id"]

        async def live() -> bool:
            texts = [line["content"] for line in await lines_of(http, server, execution_id)]
            steps = await steps_of(http, server, execution_id)
            return "first line" in texts and steps.get("prepare") == "running"
        await until(live)
        detail = await monitor(http, server, f"/api/executions/{execution_id}")
        assert detail["execution"]["status"] == "running"
        cwd = Path((marks / "cwd").read_text().strip())
        assert cwd.is_relative_to(workers.tmp_path / "work-w-ci-1")  # a fresh folder of the worker's

        (marks / "go").touch()
        done = await ended(http, server, rid, job["job_id"])
        assert done["status"] == "completed", done
        texts = [line["content"] for line in await lines_of(http, server, execution_id)]
        assert "hello from the second step" in texts
        assert texts.count("first line") == 1  # streamed, then reported: stored once
        steps = await steps_of(http, server, execution_id)
        assert steps["s1"] == steps["s2"] == steps["prepare"] == "completed"
        assert not cwd.exists()  # the step's folder is removed after it

        failing = await submit(http, server, rid, "echo going to fail; exit 3", "echo never")
        done = await ended(http, server, rid, failing["job_id"])
        assert done["status"] == "failed" and done["exit_code"] == 3
        steps = await steps_of(http, server, failing["execution_id"])
        assert steps["s1"] == "failed" and steps["s2"] != "completed"

        status, health = await call(http, "GET", f"{server}/api/runners/{rid}/health")
        assert status == 200 and health["health"] == "healthy", health
        assert health["checks"]["worker_heartbeat"]["worker"] == "w-ci-1"


async def test_max_concurrent_jobs_1_queues_the_second_and_stop_holds_the_queue(
        server: str, workers: Workers, marks: Path) -> None:
    start_worker(workers, "ci-2", "--concurrency", "1")  # registers max_concurrent_jobs=1
    async with aiohttp.ClientSession() as http:
        rid = (await runner_named(http, server, "ci-2"))["id"]
        first = await submit(http, server, rid, f'touch "{marks}/first-ran"; {gate(marks, "first")}')
        second = await submit(http, server, rid, f'touch "{marks}/second-ran"')
        await base.appears(marks / "first-ran")
        assert (await job_of(http, server, rid, second["job_id"]))["status"] == "queued"

        status, _ = await call(http, "POST", f"{server}/api/runners/{rid}/stop",
                               json={"graceful": True, "timeout": 60})
        assert status == 200
        (marks / "first").touch()
        assert (await ended(http, server, rid, first["job_id"]))["status"] == "completed"
        # stopped: the second stays queued, and a new job is refused
        status, body = await call(http, "POST", f"{server}/api/runners/{rid}/jobs",
                                  json={"name": "x", "steps": [{"name": "a", "run": "true"}]})
        assert status == 409, body
        assert (await job_of(http, server, rid, second["job_id"]))["status"] == "queued"
        assert not (marks / "second-ran").exists()

        status, _ = await call(http, "POST", f"{server}/api/runners/{rid}/start")
        assert status == 200
        assert (await ended(http, server, rid, second["job_id"]))["status"] == "completed"
        assert (marks / "second-ran").exists()


@pytest.mark.parametrize("retries", [0, 1])
async def test_a_worker_killed_9_shows_in_health_and_its_job_fails_or_runs_again(
        server: str, workers: Workers, marks: Path, retries: int) -> None:
    doomed = start_worker(workers, f"ci-k{retries}", "--concurrency", "1")
    async with aiohttp.ClientSession() as http:
        rid = (await runner_named(http, server, f"ci-k{retries}"))["id"]
        # the first attempt waits forever (its worker dies); an attempt after it ends at once
        once = (f'if mkdir "{marks}/lock" 2>/dev/null; then echo $$ > "{marks}/lock/pid"; echo "first attempt"; '
                f'sleep 60; fi; echo "second run"')
        job = await submit(http, server, rid, once, retry_count=retries)
        async def printed() -> bool:
            return "first attempt" in [line["content"] for line in await lines_of(http, server, job["execution_id"])]
        await until(printed)  # streamed before the worker dies
        doomed.kill()  # SIGKILL: no more heartbeats

        async def stale() -> dict[str, Any] | None:
            _, health = await call(http, "GET", f"{server}/api/runners/{rid}/health")
            return health if health["health"] == "unhealthy" else None
        health = await until(stale, HEARTBEAT_TIMEOUT + 30)
        check = health["checks"]["worker_heartbeat"]
        assert check["status"] == "fail" and check["worker"] == f"w-ci-k{retries}"
        assert check["seconds_since_heartbeat"] >= HEARTBEAT_TIMEOUT and check["last_heartbeat"]

        if retries == 0:
            done = await ended(http, server, rid, job["job_id"], HEARTBEAT_TIMEOUT + 30)
            assert done["status"] == "failed", done
            texts = [line["content"] for line in await lines_of(http, server, job["execution_id"])]
            assert any("no heartbeat from worker w-ci-k0" in t for t in texts), texts
        else:
            # the step waits for a worker again: the next one to serve the runner runs it
            start_worker(workers, rid, "--concurrency", "1", "--token", "unused-with-auth-off")
            done = await ended(http, server, rid, job["job_id"], HEARTBEAT_TIMEOUT + 30)
            assert done["status"] == "completed", done
            texts = [line["content"] for line in await lines_of(http, server, job["execution_id"])]
            assert "first attempt" in texts and "second run" in texts
            _, health = await call(http, "GET", f"{server}/api/runners/{rid}/health")
            assert health["health"] == "healthy"


async def test_the_documents_sdk_submits_a_job_to_a_worker_runner(server: str, workers: Workers) -> None:
    start_worker(workers, "ci-sdk")
    async with aiohttp.ClientSession() as http:
        rid = (await runner_named(http, server, "ci-sdk"))["id"]
        client = RustCIRunnerClient(server)
        answer = await asyncio.to_thread(client.submit_job, rid, {
            "name": "sdk job", "steps": [{"name": "greet", "run": "echo from the sdk"}]})
        job_id = answer["job_id"]
        done = await ended(http, server, rid, job_id)
        assert done["status"] == "completed"
        texts = [line["content"] for line in await lines_of(http, server, done["execution_id"])]
        assert "from the sdk" in texts


async def test_the_worker_routes_are_in_the_openapi_document(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        status, doc = await call(http, "GET", f"{server}/api/openapi.json")
    assert status == 200
    paths = doc["paths"]
    for path in ("/api/runners/{runner_id}/worker/jobs/claim",
                 "/api/runners/{runner_id}/worker/jobs/{command_id}/heartbeat",
                 "/api/runners/{runner_id}/worker/jobs/{command_id}/output",
                 "/api/runners/{runner_id}/worker/jobs/{command_id}/complete"):
        assert path in paths, path


async def test_with_auth_on_the_worker_registers_with_a_token_then_uses_its_runners_registration_token(
        engine: Any, tmp_path: Path) -> None:
    """The listener's auth on (in-process, real engine): the worker registers with the bearer token
    it is given, then calls its runner's routes with the registration token from the answer; those
    routes refuse a caller without one, and the token opens no other runner's."""
    async with rustci_api(engine, tmp_path) as api:
        started = Workers(tmp_path, api.base)
        try:
            proc = started.start("w-auth", "--rustci-runner", "ci-auth", "--wait", "2", "--token", api.token)
            async def registered() -> dict[str, Any] | None:
                _, body = await api.call("GET", "/api/runners?type=worker")
                return next((r for r in body["runners"] if r["name"] == "ci-auth"), None)
            rid = (await until(registered))["id"]
            job = await api.submit(rid, 'echo "$WHO ran here"', environment={"WHO": "the worker"})
            execution = await api.finished(job)
            assert execution.status.value == "completed"
            _, detail = await api.call("GET", f"/api/runners/{rid}/jobs/{job['job_id']}")
            assert detail["status"] == "completed"
            assert proc.poll() is None  # still serving

            claim = f"{api.base}/api/runners/{rid}/worker/jobs/claim"
            async with api.session.post(claim, json={"executor_id": "intruder"}) as resp:
                assert resp.status == 401
            other = await api.register("other-worker", "worker")
            status, reg = await api.call("POST", "/api/runners/register", json={"name": "third", "type": "worker"})
            assert status == 201
            async with api.session.post(f"{api.base}/api/runners/{other}/worker/jobs/claim",
                                        json={"executor_id": "x"},
                                        headers={"Authorization": f"Bearer {reg['registration_token']}"}) as resp:
                assert resp.status == 401
            async with api.session.post(f"{api.base}/api/runners/{reg['runner_id']}/worker/jobs/claim",
                                        json={"executor_id": "x"},
                                        headers={"Authorization": f"Bearer {reg['registration_token']}"}) as resp:
                assert resp.status == 204
        finally:
            await asyncio.to_thread(started.stop_all)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cancelling_a_job_stops_its_step_on_the_worker(server: str, workers: Workers, marks: Path) -> None:
    start_worker(workers, "ci-c")
    async with aiohttp.ClientSession() as http:
        rid = (await runner_named(http, server, "ci-c"))["id"]
        job = await submit(http, server, rid, f'sleep 60 & echo $! > "{marks}/sleeper"; wait')
        await base.appears(marks / "sleeper")
        pid = int(await until(lambda: asyncio.to_thread(lambda: (marks / "sleeper").read_text().strip())))
        status, body = await call(http, "POST", f"{server}/api/runners/{rid}/jobs/{job['job_id']}/cancel")
        assert status == 200, body
        assert (await ended(http, server, rid, job["job_id"]))["status"] == "cancelled"

        async def gone() -> bool:
            return not _alive(pid)
        await until(gone, 20)  # told at its next heartbeat, the worker killed the step's processes
        await base.appears_in_log(workers, "w-ci-c", "heartbeat refused")

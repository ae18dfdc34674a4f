"""RustCI docker runners against podman's Docker API service: the document's Python SDK example and
its curl examples as written (only the base URL, and the runner id, changed; the test helper adds
the bearer token), the daemon's ping in the health check, the resource limits in the container."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
from typing import Any

import pytest

from engine.model import ExecutionStatus
from tests.api.rustci_helpers import WAIT, RustciApi, rc, sdk_client

__all__ = ["rc"]

DOC_ID = "runner_123e4567-e89b-12d3-a456-426614174000"


@pytest.fixture(autouse=True)
def docker_here(podman_socket: str, busybox_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing answers on localhost:8081: a docker runner registered there uses DOCKER_HOST (podman)."""
    monkeypatch.setenv("DOCKER_HOST", podman_socket)
    monkeypatch.setenv("STEPFLOW_RUSTCI_IMAGE", busybox_image)


async def test_the_documents_python_sdk_example(rc: RustciApi) -> None:
    client = sdk_client(rc)

    def usage() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        # Register runner
        runner_config = {
            "name": "my-docker-runner",
            "type": "docker",
            "host": "localhost",
            "port": 8081,
            "capabilities": ["docker"]
        }
        result = client.register_runner(runner_config)
        print(f"Runner registered: {result['runner_id']}")

        # Submit job
        job_config = {
            "name": "test-job",
            "steps": [{"name": "test", "run": "echo Hello"}]
        }
        job_result = client.submit_job(result['runner_id'], job_config)
        print(f"Job submitted: {job_result['job_id']}")
        return result, job_result, client.get_runner_status(result['runner_id'])

    result, job_result, status = await asyncio.to_thread(usage)
    assert status["runner_id"] == result["runner_id"] and status["status"] == "active"
    assert status["capabilities_status"] == {"docker": "available"}
    done = await rc.finished(job_result)
    assert done.status is ExecutionStatus.COMPLETED, done.error_message
    assert "Hello" in [line.text for line in await rc.engine.get_log_lines(done.id)]


async def test_health_pings_the_docker_daemon(rc: RustciApi) -> None:
    runner_id = await rc.register("d", "docker", host="localhost", port=8081)
    status, health = await rc.call("GET", f"/api/runners/{runner_id}/health")
    assert status == 200 and health["health"] == "healthy"
    assert health["checks"]["docker_daemon"]["status"] == "pass" and health["checks"]["docker_daemon"]["version"]
    assert health["checks"]["disk_space"]["available_gb"] > 0 and health["checks"]["memory"]["available_gb"] > 0
    # a daemon that is not there fails the check
    gone = await rc.register("gone", "docker", metadata={"docker_host": "unix:///nonexistent/docker.sock"})
    status, health = await rc.call("GET", f"/api/runners/{gone}/health")
    assert health["health"] == "unhealthy" and health["checks"]["docker_daemon"]["status"] == "fail"


async def test_resource_limits_apply_to_the_job_containers(rc: RustciApi) -> None:
    runner_id = await rc.register("limited", "docker", host="localhost", port=8081)
    status, _ = await rc.call("PUT", f"/api/runners/{runner_id}/config",
                              json={"resource_limits": {"cpu_limit": "500m", "memory_limit": "64Mi"}})
    assert status == 200
    # cgroup v1, else v2: the container's own memory limit and cpu quota
    job = await rc.submit(runner_id, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
                                     " || cat /sys/fs/cgroup/memory.max",
                          "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max")
    done = await rc.finished(job)
    assert done.status is ExecutionStatus.COMPLETED, done.error_message
    lines = [line.text for line in await rc.engine.get_log_lines(done.id)]
    assert str(64 * 1024 * 1024) in lines
    assert any(line.split()[0] == "50000" for line in lines if line.strip())


# -- the document's curl examples, as written ---------------------------------------------------------
REGISTER = """curl -X POST http://localhost:8080/api/runners/register \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "docker-runner-1",
    "type": "docker",
    "host": "localhost",
    "port": 8081,
    "capabilities": ["docker"],
    "metadata": {
      "os": "linux",
      "arch": "amd64"
    }
  }'"""
LIST = ["curl http://localhost:8080/api/runners",
        'curl "http://localhost:8080/api/runners?status=active&type=docker"',
        'curl "http://localhost:8080/api/runners?limit=10&offset=20"']
GET = "curl http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000"
UPDATE = """curl -X PUT http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000 \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "updated-docker-runner",
    "capabilities": ["docker", "deployment"]
  }'"""
STATUS = "curl http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/status"
HEALTH = "curl http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/health"
METRICS = 'curl "http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/metrics?period=24h&resolution=5m"'
SUBMIT = """curl -X POST http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/jobs \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "hello-world",
    "steps": [
      {
        "name": "greet",
        "run": "echo Hello World"
      }
    ]
  }'"""
JOBS = "curl http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/jobs"
CONFIG = "curl http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/config"
PUT_CONFIG = """curl -X PUT http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/config \\
  -H "Content-Type: application/json" \\
  -d '{
    "max_concurrent_jobs": 8,
    "job_timeout": 1800
  }'"""
START = "curl -X POST http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/start"
STOP_GRACEFUL = """curl -X POST http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/stop \\
  -H "Content-Type: application/json" \\
  -d '{"graceful": true, "timeout": 300}'"""
STOP = "curl -X POST http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/stop"
RESTART = "curl -X POST http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/restart"
LOGS = "curl http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/logs"
LOGS_RANGE = 'curl "http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/logs?since=2024-01-15T10:00:00Z&until=2024-01-15T11:00:00Z"'
LOGS_FOLLOW = 'curl -H "Accept: text/event-stream" "http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000/logs?follow=true"'
BULK = """curl -X POST http://localhost:8080/api/runners/bulk \\
  -H "Content-Type: application/json" \\
  -d '{
    "operation": "restart",
    "filters": {
      "status": "active",
      "type": "docker"
    }
  }'"""
DELETE = "curl -X DELETE http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000"
DELETE_FORCE = 'curl -X DELETE "http://localhost:8080/api/runners/runner_123e4567-e89b-12d3-a456-426614174000?force=true"'


def _as_here(api: RustciApi, example: str, runner_id: str = DOC_ID) -> str:
    """The example on this listener, with this runner; the test helper's bearer token and
    `-s -w` (the status on a last line) added after `curl`."""
    text = example.replace("http://localhost:8080", api.base).replace(DOC_ID, runner_id)
    auth = shlex.quote(f"Authorization: Bearer {api.token}")
    return text.replace("curl ", f"curl -s -w '\\n%{{http_code}}' -H {auth} ", 1)


def curl(api: RustciApi, example: str, runner_id: str = DOC_ID) -> tuple[int, Any]:
    done = subprocess.run(["bash", "-c", _as_here(api, example, runner_id)], capture_output=True, text=True,
                          timeout=WAIT)
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), json.loads(body)


async def test_the_documents_curl_examples(rc: RustciApi) -> None:
    def run(example: str, runner_id: str = DOC_ID) -> Any:
        return asyncio.to_thread(curl, rc, example, runner_id)

    status, body = await run(REGISTER)
    assert status == 201 and body["success"] is True
    rid = body["runner_id"]
    for example in LIST:
        status, body = await run(example)
        assert status == 200 and "runners" in body
    status, body = await run(LIST[1])
    assert [r["id"] for r in body["runners"]] == [rid]
    status, body = await run(LIST[2])
    assert body["runners"] == [] and body["total_count"] == 1
    status, body = await run(GET, rid)
    assert status == 200 and body["name"] == "docker-runner-1" and "statistics" in body
    status, body = await run(UPDATE, rid)
    assert status == 200 and body["success"] is True
    for example, key in ((STATUS, "health"), (HEALTH, "checks"), (METRICS, "metrics")):
        status, body = await run(example, rid)
        assert status == 200 and key in body, body
    status, body = await run(SUBMIT, rid)
    assert status == 201 and body["job_id"].startswith("job_")
    done = await rc.finished(body)
    assert done.status is ExecutionStatus.COMPLETED, done.error_message
    status, body = await run(JOBS, rid)
    assert body["jobs"][0]["status"] == "completed" and body["jobs"][0]["name"] == "hello-world"
    status, body = await run(PUT_CONFIG, rid)
    assert status == 200 and body["restart_required"] is False
    status, body = await run(CONFIG, rid)
    assert body["configuration"]["max_concurrent_jobs"] == 8 and body["configuration"]["job_timeout"] == 1800
    for example, state in ((STOP_GRACEFUL, "stopped"), (START, "starting"), (STOP, "stopped"), (START, "starting"),
                           (RESTART, "restarting")):
        status, body = await run(example, rid)
        assert status == 200 and body["status"] == state
    status, body = await run(LOGS, rid)
    assert status == 200 and any("Hello World" == e["message"] for e in body["logs"])
    status, body = await run(LOGS_RANGE, rid)
    assert status == 200 and body["logs"] == []
    # follow: the stream's first event, then the client leaves
    process = await asyncio.create_subprocess_exec("bash", "-c", _as_here(rc, LOGS_FOLLOW, rid).replace("-s -w '\\n%{http_code}' ", "-s -N "),
                                                   stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    async with asyncio.timeout(WAIT):
        while not (line := (await process.stdout.readline()).decode()).startswith("data: "):
            assert line, "the stream ended"
    assert json.loads(line[len("data: "):])["message"].startswith("Runner registered")
    process.terminate()
    await process.wait()
    status, body = await run(BULK)
    assert status == 200 and {r["runner_id"] for r in body["results"]} == {rid}
    status, body = await run(DELETE, rid)
    assert status == 200 and body["success"] is True
    status, body = await run(REGISTER)
    status, body = await run(DELETE_FORCE, body["runner_id"])
    assert status == 200 and body["success"] is True
    status, body = await run(GET, rid)
    assert status == 404 and body["error"]["code"] == "RUNNER_NOT_FOUND"

"""RustCI jobs on a native runner: each an execution (steps, markers), queued per runner within
`max_concurrent_jobs`, cancelled, stopped and started, deleted with and without force, logs (and
SSE while a job prints), metrics, bulk, the WebSocket."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from api_compat.rustci.keys import SSE
from engine.model import AbortReason, ExecutionStatus, StepKind
from tests.api.helpers import read_event
from tests.api.rustci_helpers import WAIT, RustciApi, next_message, rc

__all__ = ["rc"]


async def test_a_job_is_an_execution_with_its_steps_and_markers(rc: RustciApi) -> None:
    runner_id = await rc.register()
    job = await rc.submit(runner_id, "echo Hello World",
                          "echo STEP_START:inner; echo \"$GREETING\"; echo STEP_COMPLETE:inner",
                          name="hello-world", environment={"GREETING": "hi there"}, timeout=60, retry_count=1)
    assert job["success"] is True and job["job_id"].startswith("job_") and job["runner_id"] == runner_id
    assert job["status"] in ("queued", "running") and job["estimated_start_time"].endswith("Z")
    done = await rc.finished(job)
    assert done.status is ExecutionStatus.COMPLETED and done.name == "hello-world"
    steps = await rc.engine.get_steps(done.id)
    names = {s.name: s for s in steps}
    assert names["s1"].kind is StepKind.WORKFLOW and names["s2"].kind is StepKind.WORKFLOW
    assert names["inner"].kind is StepKind.MARKER and names["inner"].parent_id == names["s2"].id
    lines = [line.text for line in await rc.engine.get_log_lines(done.id)]
    assert "Hello World" in lines and "hi there" in lines
    # the Monitor API shows it as any execution
    status, shown = await rc.call("GET", f"/api/executions/{done.id}")
    assert status == 200 and shown["data"]["execution"]["status"] == "completed"
    status, jobs = await rc.call("GET", f"/api/runners/{runner_id}/jobs")
    assert jobs["total_count"] == 1 and jobs["jobs"][0]["status"] == "completed"
    assert jobs["jobs"][0]["exit_code"] == 0 and jobs["jobs"][0]["duration"] >= 0
    status, runner = await rc.call("GET", f"/api/runners/{runner_id}")
    stats = runner["statistics"]
    assert stats["total_jobs_executed"] == 1 and stats["successful_jobs"] == 1 and stats["failed_jobs"] == 0
    assert stats["average_execution_time"] > 0 and stats["uptime_percentage"] == 100.0
    status, metrics = await rc.call("GET", f"/api/runners/{runner_id}/metrics?period=1h&resolution=1m")
    assert metrics["period"] == "1h" and metrics["resolution"] == "1m"
    assert metrics["metrics"]["cpu_usage"] and metrics["summary"]["total_jobs_executed"] == 1
    assert max(p["value"] for p in metrics["metrics"]["active_jobs"]) >= 1


async def test_a_failing_step_fails_the_job(rc: RustciApi) -> None:
    runner_id = await rc.register()
    done = await rc.finished(await rc.submit(runner_id, "exit 3", "echo never"))
    assert done.status is ExecutionStatus.FAILED
    status, jobs = await rc.call("GET", f"/api/runners/{runner_id}/jobs?status=failed")
    assert jobs["total_count"] == 1
    status, runner = await rc.call("GET", f"/api/runners/{runner_id}")
    assert runner["statistics"]["failed_jobs"] == 1


async def test_max_concurrent_jobs_1_queues_the_second_job(rc: RustciApi) -> None:
    runner_id = await rc.register(metadata={"max_concurrent_jobs": 1})
    gate = rc.tmp / "gate"
    first = await rc.submit(runner_id, f"while [ ! -e {gate} ]; do sleep 0.05; done", name="first")
    second = await rc.submit(runner_id, "echo second", name="second")
    assert second["status"] == "queued" and second["estimated_start_time"] > first["estimated_start_time"]
    # the first had the runner to itself: it was to start at once, not after a job's mean duration
    created = datetime.fromisoformat(first["estimated_start_time"].replace("Z", "+00:00"))
    assert abs((created - datetime.now(UTC)).total_seconds()) < 10
    status, answer = await rc.call("GET", f"/api/runners/{runner_id}/status")
    assert answer["current_load"]["queued_jobs"] == 1
    execution = await rc.engine.get_execution(second["execution_id"])
    assert execution.status is ExecutionStatus.PENDING  # in the engine's queue: `stepflow ls` shows it
    gate.touch()
    one, two = await rc.finished(first), await rc.finished(second)
    assert one.status is two.status is ExecutionStatus.COMPLETED
    assert two.started_at >= one.completed_at


async def test_cancel_a_running_job(rc: RustciApi) -> None:
    runner_id = await rc.register()
    async with rc.websocket("/api/runners/ws") as ws:
        job = await rc.submit(runner_id, "sleep 30")
        await next_message(ws, "job_started", job_id=job["job_id"])
        status, body = await rc.call("POST", f"/api/runners/{runner_id}/jobs/{job['job_id']}/cancel")
        assert status == 200 and body["success"] is True
        ended = await next_message(ws, "job_completed", job_id=job["job_id"])
        assert ended["status"] == "cancelled" and ended["runner_id"] == runner_id
    status, body = await rc.call("POST", f"/api/runners/{runner_id}/jobs/{job['job_id']}/cancel")
    assert status == 409


async def test_a_stopped_runner_takes_no_jobs_and_keeps_its_queue(rc: RustciApi) -> None:
    runner_id = await rc.register(metadata={"max_concurrent_jobs": 1})
    gate = rc.tmp / "gate2"
    first = await rc.submit(runner_id, f"while [ ! -e {gate} ]; do sleep 0.05; done")
    queued = await rc.submit(runner_id, "echo after the stop")
    async with rc.websocket("/api/runners/ws") as ws:
        status, body = await rc.call("POST", f"/api/runners/{runner_id}/stop",
                                     json={"graceful": True, "timeout": 300, "reason": "Maintenance"})
        assert status == 200 and body["status"] == "stopped"
        change = await next_message(ws, "runner_status_change", runner_id=runner_id)
        assert change["old_status"] == "active" and change["new_status"] == "inactive"
    status, body = await rc.call("POST", f"/api/runners/{runner_id}/jobs",
                                 json={"name": "refused", "steps": [{"name": "a", "run": "true"}]})
    assert status == 409 and body["error"]["code"] == "RUNNER_UNAVAILABLE"
    gate.touch()  # graceful: the running job finishes
    assert (await rc.finished(first)).status is ExecutionStatus.COMPLETED
    status, jobs = await rc.call("GET", f"/api/runners/{runner_id}/jobs?status=queued")
    assert [j["job_id"] for j in jobs["jobs"]] == [queued["job_id"]]  # not taken while stopped
    status, body = await rc.call("POST", f"/api/runners/{runner_id}/start")
    assert status == 200 and body["status"] == "starting"
    assert (await rc.finished(queued)).status is ExecutionStatus.COMPLETED
    status, runner = await rc.call("GET", f"/api/runners/{runner_id}")
    assert runner["status"] == "active" and runner["statistics"]["uptime_percentage"] < 100


async def test_a_graceful_stop_cancels_what_outlives_its_timeout(rc: RustciApi) -> None:
    runner_id = await rc.register()
    async with rc.websocket("/api/runners/ws") as ws:
        job = await rc.submit(runner_id, "sleep 60")
        await next_message(ws, "job_started", job_id=job["job_id"])
        await rc.call("POST", f"/api/runners/{runner_id}/stop", json={"graceful": True, "timeout": 0.5})
        ended = await next_message(ws, "job_completed", job_id=job["job_id"])
    assert ended["status"] == "cancelled"


async def test_delete_with_active_jobs_needs_force(rc: RustciApi) -> None:
    runner_id = await rc.register()
    job = await rc.submit(runner_id, "sleep 60")
    status, body = await rc.call("DELETE", f"/api/runners/{runner_id}")
    assert status == 409 and job["job_id"] in body["error"]["details"]["active_jobs"]
    status, body = await rc.call("DELETE", f"/api/runners/{runner_id}?force=true")
    assert status == 200 and body["success"] is True
    assert (await rc.finished(job)).status is ExecutionStatus.CANCELLED
    status, body = await rc.call("GET", f"/api/runners/{runner_id}")
    assert status == 404
    idle = await rc.register("idle")
    status, body = await rc.call("DELETE", f"/api/runners/{idle}")
    assert status == 200


async def test_logs_and_their_filters(rc: RustciApi) -> None:
    runner_id = await rc.register()
    done = await rc.finished(await rc.submit(runner_id, "echo out-line; echo err-line >&2", name="logs"))
    assert done.status is ExecutionStatus.COMPLETED
    status, body = await rc.call("GET", f"/api/runners/{runner_id}/logs")
    messages = [entry["message"] for entry in body["logs"]]
    assert "out-line" in messages and "err-line" in messages
    line = next(e for e in body["logs"] if e["message"] == "out-line")
    assert line["context"] == {"job_id": f"job_{done.id}", "step": "s1"} and line["level"] == "info"
    status, body = await rc.call("GET", f"/api/runners/{runner_id}/logs?level=error")
    assert "err-line" in [e["message"] for e in body["logs"]] and "out-line" not in [e["message"] for e in body["logs"]]
    status, body = await rc.call("GET", f"/api/runners/{runner_id}/logs?limit=1")
    assert len(body["logs"]) == 1 and body["has_more"] is True
    status, body = await rc.call("GET", f"/api/runners/{runner_id}/logs?until=2000-01-01T00:00:00Z")
    assert body["logs"] == []
    status, body = await rc.call("GET", f"/api/runners/{runner_id}/logs?since=2000-01-01T00:00:00Z")
    assert body["total_count"] >= 3


async def test_follow_streams_a_printing_job_as_server_sent_events(rc: RustciApi) -> None:
    runner_id = await rc.register()
    gate = rc.tmp / "gate3"
    async with rc.stream(f"/api/runners/{runner_id}/logs?follow=true", Accept="text/event-stream") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        first = json.loads((await read_event(resp))["data"])
        assert first["message"].startswith("Runner registered")
        job = await rc.submit(runner_id, f"echo tick-1; while [ ! -e {gate} ]; do sleep 0.05; done; echo tick-2")
        seen: list[str] = []
        async with asyncio.timeout(WAIT):
            while "tick-1" not in seen:
                seen.append(json.loads((await read_event(resp))["data"])["message"])
        gate.touch()  # the job still runs: its next line comes over the same stream
        async with asyncio.timeout(WAIT):
            while "tick-2" not in seen:
                seen.append(json.loads((await read_event(resp))["data"])["message"])
    await rc.finished(job)
    # the client left: nothing of its stream is left in the hub
    assert rc.listener is not None and rc.listener.app is not None
    async with asyncio.timeout(WAIT):
        await rc.listener.app[SSE].wait_for_count(0)


async def test_logs_without_the_event_stream_header_answer_json(rc: RustciApi) -> None:
    runner_id = await rc.register()
    status, body = await rc.call("GET", f"/api/runners/{runner_id}/logs?follow=true")
    assert status == 200 and body["logs"][0]["message"].startswith("Runner registered")


async def test_bulk_by_filters(rc: RustciApi) -> None:
    a = await rc.register("a", tags=["production"])
    b = await rc.register("b", tags=["production"])
    c = await rc.register("c", tags=["staging"])
    status, body = await rc.call("POST", "/api/runners/bulk", json={
        "operation": "update_config", "filters": {"status": "active", "type": "native", "tags": ["production"]},
        "data": {"max_concurrent_jobs": 8, "job_timeout": 1800}})
    assert status == 200 and body["success"] is True and body["affected_runners"] == 2
    assert {r["runner_id"] for r in body["results"]} == {a, b}
    for runner_id, expected in ((a, 8), (b, 8), (c, 4)):
        status, config = await rc.call("GET", f"/api/runners/{runner_id}/config")
        assert config["configuration"]["max_concurrent_jobs"] == expected
    status, body = await rc.call("POST", "/api/runners/bulk", json={"operation": "stop", "filters": {"tags": ["staging"]}})
    assert body["affected_runners"] == 1
    status, page = await rc.call("GET", "/api/runners?status=inactive")
    assert [r["id"] for r in page["runners"]] == [c]
    status, body = await rc.call("POST", "/api/runners/bulk", json={"operation": "delete", "filters": {"status": "inactive"}})
    assert body["affected_runners"] == 1
    status, page = await rc.call("GET", "/api/runners")
    assert page["total_count"] == 2
    status, body = await rc.call("POST", "/api/runners/bulk", json={"operation": "explode"})
    assert status == 400 and body["error"]["code"] == "INVALID_REQUEST"


async def test_an_ssh_runner_runs_its_jobs_on_the_target_host(rc: RustciApi, asyncssh_server: Any) -> None:
    server = asyncssh_server
    runner_id = await rc.register("ssh-1", "ssh", host=server.host, port=server.port, metadata={
        "user": server.user, "key": server.client_key, "known_hosts": server.known_hosts})
    done = await rc.finished(await rc.submit(runner_id, "echo over ssh: $GREETING", environment={"GREETING": "hi"}))
    assert done.status is ExecutionStatus.COMPLETED, done.error_message
    assert "over ssh: hi" in [line.text for line in await rc.engine.get_log_lines(done.id)]
    status, health = await rc.call("GET", f"/api/runners/{runner_id}/health")
    assert health["checks"]["connectivity"]["status"] == "pass"


async def test_a_job_outliving_its_timeout_is_stopped(rc: RustciApi) -> None:
    runner_id = await rc.register()
    # each step is quick; the job as a whole is not
    job = await rc.submit(runner_id, "sleep 0.6", "sleep 0.6", "sleep 30", timeout=1)
    done = await rc.finished(job)
    assert done.status is ExecutionStatus.FAILED and done.abort_reason is AbortReason.TIMEOUT
    status, shown = await rc.call("GET", f"/api/runners/{runner_id}/jobs/{job['job_id']}")
    assert shown["status"] == "failed" and shown["duration"] < 10
    status, logs = await rc.call("GET", f"/api/runners/{runner_id}/logs?level=error")
    assert any("timed out after 1s" in e["message"] for e in logs["logs"])

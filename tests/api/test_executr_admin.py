"""executr's stale heartbeats, admin routes, metrics, auth and restarts, on a real listener with the
real engine and store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api_compat import ApiListener
from api_compat.auth import create_token
from engine.events import ExecutionFinished, ExecutionUpdated
from engine.model import ExecutionStatus
from tests.api.conftest import make_config, running
from tests.api.executr_helpers import claim_body, job
from tests.engine_helpers import engine_at

V1 = "/api/v1"


async def _call(session: aiohttp.ClientSession, listener: ApiListener, method: str, path: str,
                **kwargs: Any) -> tuple[int, Any]:
    async with session.request(method, listener.url + path, **kwargs) as resp:
        text = await resp.text()
        if resp.content_type == "application/json" and text:
            import json

            return resp.status, json.loads(text)
        return resp.status, text


@pytest.fixture
async def fast_stale(engine: Any, tmp_path: Path) -> AsyncIterator[ApiListener]:
    async with running(engine, make_config(tmp_path, executr_heartbeat_timeout=0.3)) as lst:
        yield lst


async def _until(sub: Any, job_id: str, status: ExecutionStatus) -> None:
    async with asyncio.timeout(10):
        async for event in sub:
            if (isinstance(event, ExecutionUpdated | ExecutionFinished) and event.execution_id == job_id
                    and event.execution.status is status):
                return


async def test_silent_worker_job_requeued_then_fails_past_max_retries(
        engine: Any, fast_stale: ApiListener, session: aiohttp.ClientSession) -> None:
    def api(method: str, path: str, **kw: Any) -> Any:
        return _call(session, fast_stale, method, path, **kw)

    _, created = await api("POST", f"{V1}/jobs", json=job(max_retries=1))
    job_id = created["id"]
    sub = engine.subscribe()
    status, _ = await api("POST", f"{V1}/jobs/claim", json=claim_body("silent-1"))
    assert status == 200
    # the first worker never sends a heartbeat: the job comes back, and a waiting claim gets it
    status, again = await api("POST", f"{V1}/jobs/claim?wait=10", json=claim_body("worker-2"))
    assert status == 200 and again["id"] == job_id
    _, got = await api("GET", f"{V1}/jobs/{job_id}")
    assert [a["executor_id"] for a in got["attempts"]] == ["silent-1", "worker-2"]
    assert got["attempts"][0]["status"] == "timed out" and got["attempts"][1]["status"] == "running"
    # the first worker's late reports are refused: the job is another's now
    status, body = await api("PUT", f"{V1}/jobs/{job_id}/complete", json={"executor_id": "silent-1"})
    assert status == 409 and "worker-2" in body["error"]
    # the second goes silent too: past max_retries, the job fails
    await _until(sub, job_id, ExecutionStatus.FAILED)
    _, got = await api("GET", f"{V1}/jobs/{job_id}")
    assert got["status"] == "failed"
    execution = await engine.get_execution(job_id)
    assert execution.status is ExecutionStatus.FAILED and "heartbeat" in (execution.error_message or "")


async def test_heartbeats_keep_a_job_running(engine: Any, fast_stale: ApiListener,
                                             session: aiohttp.ClientSession) -> None:
    def api(method: str, path: str, **kw: Any) -> Any:
        return _call(session, fast_stale, method, path, **kw)

    _, created = await api("POST", f"{V1}/jobs", json=job(max_retries=0))
    await api("POST", f"{V1}/jobs/claim", json=claim_body())
    for _ in range(8):  # 1.2 s of heartbeats every 0.15 s: four timeouts' worth
        status, _ = await api("PUT", f"{V1}/jobs/{created['id']}/heartbeat", json={"executor_id": "worker-1"})
        assert status == 204
        await asyncio.sleep(0.15)
    _, got = await api("GET", f"{V1}/jobs/{created['id']}")
    assert got["status"] == "running" and len(got["attempts"]) == 1


async def test_stats_executors_health(api: Any) -> None:
    status, executors = await api("GET", f"{V1}/admin/executors")
    assert status == 200 and executors == []
    for name, priority in [("a", "foreground"), ("b", "background"), ("c", "best_effort"), ("d", "best_effort")]:
        await api("POST", f"{V1}/jobs", json=job(name, priority))
    _, claimed = await api("POST", f"{V1}/jobs/claim", json=claim_body("exec-1"))
    status, stats = await api("GET", f"{V1}/admin/stats")
    assert status == 200
    assert stats["jobs_by_status"] == {"pending": 3, "running": 1, "completed": 0, "failed": 0, "cancelled": 0}
    assert stats["pending_by_priority"] == {"foreground": 0, "background": 1, "best_effort": 2}
    assert stats["active_executors"] == 1
    _, executors = await api("GET", f"{V1}/admin/executors")
    assert [(e["executor_id"], e["current_job_id"], e["job_type"]) for e in executors] == [
        ("exec-1", claimed["id"], "a")]
    status, health = await api("GET", f"{V1}/health")
    assert status == 200 and health == {"status": "healthy", "database": "connected"}


async def test_metrics_parse_with_the_reference_names(listener: ApiListener, session: aiohttp.ClientSession) -> None:
    def api(method: str, path: str, **kw: Any) -> Any:
        return _call(session, listener, method, path, **kw)

    _, created = await api("POST", f"{V1}/jobs", json=job("m", "foreground"))
    await api("POST", f"{V1}/jobs", json=job("m", "best_effort"))
    await api("POST", f"{V1}/jobs/claim", json=claim_body("exec-1"))
    await api("PUT", f"{V1}/jobs/{created['id']}/complete", json={"executor_id": "exec-1", "stdout": "ok\n"})
    status, text = await api("GET", f"{V1}/metrics")
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("executr_jobs_submitted_total", (("priority", "foreground"), ("type", "m")))] == 1
    assert samples[("executr_jobs_completed_total",
                    (("executor", "exec-1"), ("priority", "foreground"), ("type", "m")))] == 1
    assert samples[("executr_jobs_in_queue", (("priority", "best_effort"), ("status", "pending")))] == 1
    assert samples[("executr_jobs_in_queue", (("priority", "foreground"), ("status", "completed")))] == 1
    assert samples[("executr_executor_jobs_claimed_total", (("executor", "exec-1"),))] == 1
    assert any(name == "executr_job_wait_time_seconds_count" for name, _ in samples)
    assert any(name == "executr_job_duration_seconds_count" for name, _ in samples)
    assert any(name == "executr_claim_duration_seconds_bucket" for name, _ in samples)


async def test_routes_need_the_token_when_auth_is_on(engine: Any, tmp_path: Path,
                                                     session: aiohttp.ClientSession) -> None:
    async with running(engine, make_config(tmp_path, auth_enabled=True)) as lst:
        status, body = await _call(session, lst, "POST", f"{V1}/jobs", json=job())
        assert status == 401 and "error" in body
        token = create_token(tmp_path, subject="executr-test")
        headers = {"Authorization": f"Bearer {token}"}
        status, _ = await _call(session, lst, "POST", f"{V1}/jobs", json=job(), headers=headers)
        assert status == 201
        status, _ = await _call(session, lst, "POST", f"{V1}/jobs/claim", json=claim_body(), headers=headers)
        assert status == 200


async def test_restart_loses_no_queued_job_and_accepts_running_reports(
        tmp_path: Path, session: aiohttp.ClientSession) -> None:
    data = tmp_path / "data"
    async with engine_at(data) as engine, running(engine, make_config(tmp_path)) as lst:
        ids = []
        for i in range(3):
            _, created = await _call(session, lst, "POST", f"{V1}/jobs", json=job(f"r{i}"))
            ids.append(created["id"])
        _, claimed = await _call(session, lst, "POST", f"{V1}/jobs/claim", json=claim_body("survivor"))
    async with engine_at(data) as engine, running(engine, make_config(tmp_path)) as lst:
        # the running job was not marked lost: its worker holds it, and its report is taken
        execution = await engine.get_execution(claimed["id"])
        assert execution.status is ExecutionStatus.RUNNING
        status, _ = await _call(session, lst, "PUT", f"{V1}/jobs/{claimed['id']}/heartbeat",
                                json={"executor_id": "survivor"})
        assert status == 204
        status, _ = await _call(session, lst, "PUT", f"{V1}/jobs/{claimed['id']}/complete",
                                json={"executor_id": "survivor", "stdout": "after restart\n"})
        assert status == 204
        # the queued ones are still queued (no engine ran them), and are claimed in order
        got = []
        while True:
            status, body = await _call(session, lst, "POST", f"{V1}/jobs/claim", json=claim_body("w"))
            if status == 204:
                break
            got.append(body["id"])
        assert got == ids[1:]
        assert (await engine.get_execution(claimed["id"])).status is ExecutionStatus.COMPLETED


async def test_a_waiting_claim_answers_204_when_the_listener_stops(
        engine: Any, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with running(engine, make_config(tmp_path)) as lst:
        waiting = asyncio.create_task(_call(session, lst, "POST", f"{V1}/jobs/claim?wait=25", json=claim_body()))
        # the claim reaches the server and waits there (nothing tells when: a job submitted now
        # would be claimed; an empty queue it is)
        await asyncio.sleep(0.1)
        assert not waiting.done()
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
    status, _ = await asyncio.wait_for(waiting, 5)
    assert status == 204
    assert loop.time() - stopped_at < 3  # not the 25 s it asked to wait, nor the shutdown timeout


async def test_a_claim_waits_no_longer_than_the_listener_holds_one_and_an_empty_wait_is_refused(
        engine: Any, tmp_path: Path, session: aiohttp.ClientSession) -> None:
    """`executr_longest_claim_wait` cuts a longer `?wait=` (204 sooner); it still waits that long for
    a job. `?wait=` with no number is a 400, as an empty integer parameter is."""
    async with running(engine, make_config(tmp_path, executr_longest_claim_wait=0.3)) as lst:
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, _ = await asyncio.wait_for(_call(session, lst, "POST", f"{V1}/jobs/claim?wait=25",
                                                 json=claim_body()), 10)
        assert status == 204
        assert 0.3 <= loop.time() - started < 5
        waiting = asyncio.create_task(_call(session, lst, "POST", f"{V1}/jobs/claim?wait=25", json=claim_body()))
        await asyncio.sleep(0)
        _, created = await _call(session, lst, "POST", f"{V1}/jobs", json=job())
        status, claimed = await asyncio.wait_for(waiting, 5)
        assert status == 200 and claimed["id"] == created["id"]
        status, body = await _call(session, lst, "POST", f"{V1}/jobs/claim?wait=", json=claim_body())
        assert status == 400 and "wait" in body["error"]

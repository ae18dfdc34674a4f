"""The RustCI runner API on a real `stepflow serve` process: runners and a stopped runner's queue
survive a restart of the server; started again, the runner takes its queue."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from api_compat import create_token
from tests.api.rustci_helpers import RustciApi, next_message
from tests.serve_process import stepflow_serve


async def test_a_stopped_runner_and_its_queue_survive_a_server_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    gate = tmp_path / "gate"
    async with aiohttp.ClientSession() as session:
        async with stepflow_serve(data, tmp_path) as url:
            api = RustciApi(url, create_token(data), session)
            runner_id = await api.register("kept", "native", metadata={"max_concurrent_jobs": 1})
            async with api.websocket("/api/runners/ws") as ws:
                first = await api.submit(runner_id, f"while [ ! -e {gate} ]; do sleep 0.05; done", name="first")
                await next_message(ws, "job_started", job_id=first["job_id"])
                queued = await api.submit(runner_id, "echo taken after the restart", name="second")
                assert queued["status"] == "queued"
                status, _ = await api.call("POST", f"/api/runners/{runner_id}/stop")  # immediate
                assert status == 200
                ended = await next_message(ws, "job_completed", job_id=first["job_id"])
                assert ended["status"] == "cancelled"
        async with stepflow_serve(data, tmp_path) as url:
            api = RustciApi(url, create_token(data), session)
            status, runner = await api.call("GET", f"/api/runners/{runner_id}")
            assert status == 200 and runner["status"] == "inactive"
            assert runner["statistics"]["total_jobs_executed"] == 1
            status, jobs = await api.call("GET", f"/api/runners/{runner_id}/jobs?status=queued")
            assert [j["job_id"] for j in jobs["jobs"]] == [queued["job_id"]]
            status, listed = await api.call("GET", "/api/executions")  # the Monitor API shows it, pending
            assert any(e["id"] == queued["execution_id"] and e["status"] == "pending" for e in listed["data"]["executions"])
            async with api.websocket("/api/runners/ws") as ws:
                await api.call("POST", f"/api/runners/{runner_id}/start")
                done = await next_message(ws, "job_completed", job_id=queued["job_id"])
            assert done["status"] == "completed"
            status, logs = await api.call("GET", f"/api/runners/{runner_id}/logs")
            assert "taken after the restart" in [e["message"] for e in logs["logs"]]

"""Serials under concurrency, the two-target WebSocket events, a scheduled job across a restart,
malformed serials and refused bodies: every request through the one client carrying the token."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.api.opsconductor_helpers import ops_server, ssh_targets
from tests.servers import SshServer

YEAR = datetime.now(UTC).year
QUICK_JOB = {"name": "quick", "job_type": "command",
             "actions": [{"action_type": "command", "action_name": "hello",
                          "action_parameters": {"command": "echo hello"}}]}


async def test_fifty_concurrent_creations_and_executions_get_unique_gap_free_serials(tmp_path: Path) -> None:
    async with ops_server(tmp_path / "data") as ops:
        created = await asyncio.gather(*(ops.call("POST", "/api/jobs", json={**QUICK_JOB, "name": f"job {i}"})
                                         for i in range(50)))
        assert all(status == 201 for status, _ in created)
        assert sorted(job["job_serial"] for _, job in created) == [f"J{YEAR}{n:04d}" for n in range(1, 51)]
        assert sorted(job["id"] for _, job in created) == list(range(1, 51))

        targets = await asyncio.gather(*(ops.call("POST", "/api/targets", json={"name": f"box-{i}", "type": "local"})
                                         for i in range(50)))
        assert all(status == 201 for status, _ in targets)
        # `local` was imported first (T…0001)
        assert sorted(t["target_serial"] for _, t in targets) == [f"T{YEAR}{n:04d}" for n in range(2, 52)]

        job_id = created[0][1]["id"]
        job_serial = created[0][1]["job_serial"]
        local = 1
        runs = await asyncio.gather(*(ops.call("POST", f"/api/jobs/{job_id}/execute", json={"target_ids": [local]})
                                      for _ in range(50)))
        assert all(status == 201 for status, _ in runs), [b for s, b in runs if s != 201][:2]
        assert sorted(e["execution_serial"] for _, e in runs) == [f"{job_serial}.{n:04d}" for n in range(1, 51)]
        assert sorted(e["execution_number"] for _, e in runs) == list(range(1, 51))
        for _, execution in runs:
            assert [b["branch_serial"] for b in execution["branches"]] == [f"{execution['execution_serial']}.0001"]

        # another job's executions are numbered from 1 again; its branches per execution
        other = created[1][1]
        status, run = await ops.call("POST", f"/api/jobs/{other['id']}/execute",
                                     json={"target_ids": [local, 2, 3]})
        assert status == 201
        assert run["execution_serial"] == f"{other['job_serial']}.0001"
        assert [b["branch_serial"][-4:] for b in run["branches"]] == ["0001", "0002", "0003"]
        assert all(re.fullmatch(r"J\d{8}\.\d{4}\.\d{4}", b["branch_serial"]) for b in run["branches"])


async def test_a_two_target_execution_streams_its_events(tmp_path: Path, asyncssh_server: SshServer) -> None:
    async with ops_server(tmp_path / "data", ssh_targets(asyncssh_server, "web1")) as ops:
        events = await ops.ws()
        job = {**QUICK_JOB, "actions": [
            {"action_type": "command", "action_name": "build",
             "action_parameters": {"command": "echo STEP_START:compile; echo compiling; echo STEP_COMPLETE:compile"}},
            {"action_type": "command", "action_name": "check", "action_parameters": {"command": "exit 3"}}]}
        status, created = await ops.call("POST", "/api/jobs", json=job)
        assert status == 201
        status, run = await ops.call("POST", f"/api/jobs/{created['id']}/execute", json={"target_ids": [1, 2]})
        assert status == 201, run
        serial = run["execution_serial"]
        done = await events.completed(serial)
        kinds = [e["type"] for e in events.seen if e["data"].get("execution_serial") == serial]
        assert kinds[0] == "execution_started" and kinds[-1] == "execution_completed"
        assert kinds.count("branch_completed") == 2
        branches = {e["data"]["branch_serial"]: e["data"] for e in events.seen if e["type"] == "branch_completed"}
        assert set(branches) == {f"{serial}.0001", f"{serial}.0002"}
        assert {b["target_serial_ref"] for b in branches.values()} == {f"T{YEAR}0001", f"T{YEAR}0002"}
        assert all(b["status"] == "failed" and b["exit_code"] == 3 and b["completed_at"] for b in branches.values())
        assert done["data"]["status"] == "failed" and done["data"]["branches_failed"] == 2

        # each action a step, the markers sub-steps, one branch per target (the Monitor API's view)
        status, found = await ops.call("GET", f"/api/executions/serial/{serial}")
        status, monitor = await ops.call("GET", f"/api/executions/{found['stepflow_execution_id']}")
        assert status == 200
        steps = monitor["data"]["steps"]
        assert sorted(s["name"] for s in steps if s["kind"] == "workflow") == ["build", "build", "check", "check"]
        assert [s["name"] for s in steps if s["kind"] == "marker"] == ["compile", "compile"]
        status, branch = await ops.call("GET", f"/api/executions/branch/{serial}.0001")
        assert branch["exit_code"] == 3 and branch["status"] == "failed"
        assert branch["result_output"].splitlines() == ["STEP_START:compile", "compiling", "STEP_COMPLETE:compile"]
        assert branch["result_error"] == "step 'check' failed: exit code 3"


async def test_a_scheduled_job_starts_at_its_time_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    at = datetime.now(UTC) + timedelta(seconds=3)
    async with ops_server(data) as ops:
        status, job = await ops.call("POST", "/api/jobs", json={
            **QUICK_JOB, "target_ids": [1], "scheduled_at": at.isoformat().replace("+00:00", "Z")})
        assert status == 201 and job["status"] == "scheduled"
        status, executions = await ops.call("GET", f"/api/jobs/{job['id']}/executions")
        assert executions == []
    # the server stopped before the job's time; a new one on the same data starts it then
    async with ops_server(data) as ops:
        events = await ops.ws()
        status, executions = await ops.call("GET", f"/api/jobs/{job['id']}/executions")
        if not executions or executions[0]["status"] != "completed":
            await events.completed(f"{job['job_serial']}.0001", timeout=30)
        status, executions = await ops.call("GET", f"/api/jobs/{job['id']}/executions")
        assert [(e["execution_serial"], e["status"]) for e in executions] == [
            (f"{job['job_serial']}.0001", "completed")]
        assert datetime.fromisoformat(executions[0]["created_at"].replace("Z", "+00:00")) >= at
        status, again = await ops.call("GET", f"/api/jobs/{job['id']}")
        assert again["status"] == "completed"


async def test_malformed_serials_and_refused_bodies(tmp_path: Path) -> None:
    async with ops_server(tmp_path / "data") as ops:
        for path, field, example, received in (
            ("/api/executions/branch/J2025.1", "branch_serial", "J20250001.0001.0001", "J2025.1"),
            ("/api/executions/serial/J20250001", "execution_serial", "J20250001.0001", "J20250001"),
            ("/api/targets/T20x/performance", "target_serial", "T20250001", "T20x"),
            ("/api/analytics/jobs/J1/metrics", "job_serial", "J20250001", "J1"),
        ):
            status, body = await ops.call("GET", path)
            assert status == 422, (path, body)
            assert body["error"] == "validation_error"
            assert body["details"] == {"field": field, "expected_format": example, "received": received}
        status, body = await ops.call("POST", "/api/jobs", json={**QUICK_JOB, "job_type": "script"})
        assert status == 422 and "'script'" in body["message"] and body["details"]["field"] == "job_type"
        action = {"action_type": "http", "action_parameters": {"command": "x"}}
        status, body = await ops.call("POST", "/api/jobs", json={**QUICK_JOB, "actions": [action]})
        assert status == 422 and "'http'" in body["message"]
        status, body = await ops.call("POST", "/api/jobs", json={**QUICK_JOB, "target_ids": [99]})
        assert status == 422 and body["details"]["field"] == "target_ids"
        status, body = await ops.call("GET", "/api/analytics/executions?period=1y")
        assert status == 400 and body["error"] == "bad_request"
        status, body = await ops.call("GET", "/api/jobs/12345")
        assert status == 404 and body["error"] == "not_found"


async def test_a_target_with_running_branches_is_not_deleted(tmp_path: Path) -> None:
    async with ops_server(tmp_path / "data") as ops:
        events = await ops.ws()
        status, target = await ops.call("POST", "/api/targets", json={"name": "box", "type": "local"})
        assert status == 201 and target["id"] == 2
        status, job = await ops.call("POST", "/api/jobs", json={**QUICK_JOB, "actions": [
            {"action_type": "command", "action_parameters": {"command": "echo started; read line < /dev/null; sleep 30"}}]})
        status, run = await ops.call("POST", f"/api/jobs/{job['id']}/execute", json={"target_ids": [2]})
        assert status == 201
        await events.until(lambda e: e["type"] == "execution_started")
        status, body = await ops.call("DELETE", "/api/targets/2")
        assert status == 409 and body["error"] == "conflict"
        status, _ = await ops.call("POST", f"/api/executions/{run['stepflow_execution_id']}/cancel")
        assert status == 200
        await events.completed(run["execution_serial"])
        status, _ = await ops.call("DELETE", "/api/targets/2")
        assert status == 204
        status, _ = await ops.call("GET", "/api/targets/2")
        assert status == 404
        # its history keeps the target as it was
        status, branch = await ops.call("GET", f"/api/executions/branch/{run['execution_serial']}.0001")
        assert branch["status"] == "cancelled" and branch["target"]["name"] == "box"


async def test_targets_file_imports_keep_their_ids_by_name(tmp_path: Path, asyncssh_server: SshServer) -> None:
    data = tmp_path / "data"
    async with ops_server(data, ssh_targets(asyncssh_server, "alpha", "beta")) as ops:
        status, first = await ops.call("GET", "/api/targets")
        assert [(t["id"], t["name"], t["source"]) for t in first["data"]] == [
            (1, "alpha", "file"), (2, "beta", "file"), (3, "local", "file")]
    # the file changed: beta keeps its id and serial, gamma is new; alpha (gone from the file) stays
    # registered but cannot run anything
    async with ops_server(data, ssh_targets(asyncssh_server, "beta", "gamma")) as ops:
        status, second = await ops.call("GET", "/api/targets")
        assert [(t["id"], t["name"], t["target_serial"]) for t in second["data"]] == [
            (1, "alpha", f"T{YEAR}0001"), (2, "beta", f"T{YEAR}0002"), (3, "local", f"T{YEAR}0003"),
            (4, "gamma", f"T{YEAR}0004")]
        status, job = await ops.call("POST", "/api/jobs", json=QUICK_JOB)
        status, body = await ops.call("POST", f"/api/jobs/{job['id']}/execute", json={"target_ids": [1]})
        assert status == 422 and "no longer in the targets file" in body["message"]
        status, run = await ops.call("POST", f"/api/jobs/{job['id']}/execute", json={"target_ids": [2, 4]})
        assert status == 201 and [b["target_serial_ref"] for b in run["branches"]] == [f"T{YEAR}0002",
                                                                                       f"T{YEAR}0004"]

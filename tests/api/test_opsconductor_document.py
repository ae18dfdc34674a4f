"""Every example of specs/opsconductor-api.md end to end, with its request bodies as written, on a
real listener and engine, the targets asyncssh's SSH server on loopback (three names, ids 1-3).

The document's job runs `sudo apt update && sudo apt upgrade -y` on its targets. The test host's
PATH gets a `sudo` that runs its arguments and an `apt` that says what the document's answer says,
so that the command runs as written, through SSH, without touching this machine's packages."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.api.opsconductor_helpers import ops_server, ssh_targets
from tests.servers import SshServer

YEAR = datetime.now(UTC).year
JOB = f"J{YEAR}0001"

CREATE_JOB = {
    "name": "System Update",
    "description": "Update all production servers",
    "job_type": "command",
    "actions": [
        {
            "action_type": "command",
            "action_name": "update_system",
            "action_parameters": {
                "command": "sudo apt update && sudo apt upgrade -y"
            }
        }
    ],
    "target_ids": [1, 2, 3],
    "scheduled_at": "2025-01-08T10:00:00Z"
}
EXECUTE_JOB = {"target_ids": [1, 2, 3]}
BULK = {
    "serials": [
        "J20250001.0001.0001",
        "J20250001.0001.0002",
        "J20250001.0002.0001"
    ]
}


@pytest.fixture
def host_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "host-bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "apt").write_text('#!/bin/sh\n[ "$1" = upgrade ] && echo "System updated successfully"\nexit 0\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


async def test_every_example_of_the_document(tmp_path: Path, asyncssh_server: SshServer, host_commands: None) -> None:
    targets = ssh_targets(asyncssh_server, "prod-server-01", "prod-server-02", "prod-server-03")
    async with ops_server(tmp_path / "data", targets) as ops:
        events = await ops.ws()
        # the targets file's targets have ids 1-3 (in its order), then `local`
        status, listed = await ops.call("GET", "/api/targets")
        assert status == 200
        assert [(t["id"], t["name"], t["target_serial"]) for t in listed["data"]] == [
            (1, "prod-server-01", f"T{YEAR}0001"), (2, "prod-server-02", f"T{YEAR}0002"),
            (3, "prod-server-03", f"T{YEAR}0003"), (4, "local", f"T{YEAR}0004")]

        # Create Job: its scheduled_at has passed, so it is due and starts at once on 1, 2, 3
        status, job = await ops.call("POST", "/api/jobs", json=CREATE_JOB)
        assert status == 201, job
        assert job["id"] == 1 and job["job_serial"] == JOB and len(job["job_serial"]) == 9
        assert job["name"] == "System Update" and job["description"] == "Update all production servers"
        assert job["job_type"] == "command" and job["scheduled_at"] == "2025-01-08T10:00:00Z"
        assert job["status"] == "scheduled" and job["actions"][0]["action_name"] == "update_system"
        assert {"job_uuid", "created_at"} <= job.keys()
        first = await events.completed(f"{JOB}.0001")
        assert first["data"]["status"] == "completed"

        # Execute Job
        status, execution = await ops.call("POST", "/api/jobs/1/execute", json=EXECUTE_JOB)
        assert status == 201, execution
        serial = f"{JOB}.0002"
        assert execution["execution_serial"] == serial and len(serial) == 14
        assert execution["execution_number"] == 2 and execution["status"] in ("pending", "running")
        assert [(b["branch_serial"], b["branch_id"], b["target_id"], b["target_serial_ref"])
                for b in execution["branches"]] == [
            (f"{serial}.0001", "001", 1, f"T{YEAR}0001"), (f"{serial}.0002", "002", 2, f"T{YEAR}0002"),
            (f"{serial}.0003", "003", 3, f"T{YEAR}0003")]
        assert len(execution["branches"][0]["branch_serial"]) == 19
        done = await events.completed(serial)
        assert done["data"]["status"] == "completed" and done["data"]["branches_completed"] == 3

        # Get Job Executions
        status, executions = await ops.call("GET", "/api/jobs/1/executions")
        assert status == 200
        assert [(e["execution_serial"], e["status"]) for e in executions] == [
            (serial, "completed"), (f"{JOB}.0001", "completed")]
        assert all(e["completed_at"] and e["started_at"] and len(e["branches"]) == 3 for e in executions)

        # Get Execution by Serial (the document's serial is of 2025: well formed, not here)
        status, body = await ops.call("GET", "/api/executions/serial/J20250001.0001")
        assert status == 404 and body["error"] == "not_found"
        status, found = await ops.call("GET", f"/api/executions/serial/{JOB}.0001")
        assert status == 200
        assert found["job"] == {"id": 1, "job_serial": JOB, "name": "System Update"}
        assert found["status"] == "completed" and len(found["branches"]) == 3
        # it is an ordinary execution: the Monitor API shows it, one branch per target
        status, monitor = await ops.call("GET", f"/api/executions/{found['stepflow_execution_id']}")
        assert status == 200 and monitor["data"]["execution"]["status"] == "completed"

        # Get Branch by Serial
        status, branch = await ops.call("GET", f"/api/executions/branch/{JOB}.0001.0001")
        assert status == 200, branch
        assert branch["branch_id"] == "001" and branch["status"] == "completed" and branch["exit_code"] == 0
        assert branch["result_output"] == "System updated successfully" and branch["result_error"] is None
        assert branch["target"] == {"id": 1, "target_serial": f"T{YEAR}0001", "name": "prod-server-01",
                                    "ip_address": "127.0.0.1"}
        assert branch["started_at"] and branch["completed_at"]

        # Search Executions
        status, search = await ops.call("GET", f"/api/executions/search?q={JOB}&type=execution&limit=10")
        assert status == 200
        assert [r["execution_serial"] for r in search["results"]] == [serial, f"{JOB}.0001"]
        assert {r["type"] for r in search["results"]} == {"execution"}

        # Target Performance and History
        status, perf = await ops.call("GET", f"/api/targets/T{YEAR}0001/performance?days=30")
        assert status == 200
        assert perf["target_serial"] == f"T{YEAR}0001" and perf["target_name"] == "prod-server-01"
        assert perf["period_days"] == 30 and perf["total_executions"] == 2
        assert perf["successful_executions"] == 2 and perf["failed_executions"] == 0
        assert perf["success_rate"] == 100.0 and perf["average_duration"] >= 0
        assert [r["branch_serial"] for r in perf["recent_executions"]] == [f"{serial}.0001", f"{JOB}.0001.0001"]
        assert perf["recent_executions"][0]["execution_serial"] == serial
        assert perf["recent_executions"][0]["job_serial"] == JOB
        status, history = await ops.call("GET", f"/api/targets/T{YEAR}0001/executions?limit=20&offset=0")
        assert status == 200
        assert (history["total"], history["limit"], history["offset"]) == (2, 20, 0)
        assert history["executions"][0]["job_name"] == "System Update"
        assert history["executions"][0]["exit_code"] == 0

        # Execution Analytics and Job Metrics
        status, analytics = await ops.call("GET", "/api/analytics/executions?period=7d&group_by=day")
        assert status == 200
        assert analytics["period"] == "7d" and analytics["group_by"] == "day"
        assert analytics["total_executions"] == 2 and analytics["success_rate"] == 100.0
        assert len(analytics["data"]) == 8 and sum(d["executions"] for d in analytics["data"]) == 2
        assert analytics["data"][-1]["date"] == datetime.now(UTC).strftime("%Y-%m-%d")
        status, metrics = await ops.call("GET", f"/api/analytics/jobs/{JOB}/metrics?period=30d")
        assert status == 200
        assert metrics["job_name"] == "System Update" and metrics["total_executions"] == 2
        assert [(t["target_serial"], t["executions"], t["success_rate"]) for t in metrics["target_performance"]] == [
            (f"T{YEAR}0001", 2, 100.0), (f"T{YEAR}0002", 2, 100.0), (f"T{YEAR}0003", 2, 100.0)]

        # Bulk Execution Lookup: the document's serials (of 2025) are not here; ours of the same shape are
        status, bulk = await ops.call("POST", "/api/executions/bulk", json=BULK)
        assert status == 200 and bulk["not_found"] == BULK["serials"]
        ours = [s.replace("J20250001", JOB) for s in BULK["serials"]]
        status, bulk = await ops.call("POST", "/api/executions/bulk", json={"serials": ours})
        assert status == 200 and bulk["not_found"] == []
        first_result: dict[str, Any] = bulk["results"][0]
        assert first_result["serial"] == ours[0] and first_result["found"] is True
        assert first_result["data"]["branch_serial"] == ours[0]
        assert first_result["data"]["status"] == "completed"
        assert first_result["data"]["target_serial_ref"] == f"T{YEAR}0001"

        # Pagination
        status, page = await ops.call("GET", "/api/jobs?page=1&per_page=20&sort=created_at&order=desc")
        assert status == 200
        assert page["pagination"] == {"page": 1, "per_page": 20, "total": 1, "pages": 1, "has_next": False,
                                      "has_prev": False}
        assert page["data"][0]["job_serial"] == JOB and page["data"][0]["status"] == "completed"

        # Standard Error Format
        status, error = await ops.call("GET", "/api/executions/serial/invalid_serial")
        assert status == 422
        assert error == {"error": "validation_error", "message": "Invalid execution serial format",
                         "details": {"field": "execution_serial", "expected_format": "J20250001.0001",
                                     "received": "invalid_serial"}}

        # the WebSocket's documented events, for the execution above
        started = [e for e in events.seen if e["type"] == "execution_started"
                   and e["data"]["execution_serial"] == serial]
        assert started and started[0]["data"]["job_serial"] == JOB and started[0]["data"]["status"] == "running"
        ended = sorted(e["data"]["branch_serial"] for e in events.seen if e["type"] == "branch_completed"
                       and e["data"]["execution_serial"] == serial)
        assert ended == [f"{serial}.0001", f"{serial}.0002", f"{serial}.0003"]

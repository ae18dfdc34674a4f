"""The executr job API on a real listener and the real engine and store: submit, claim, report,
cancel, list, and the job as an execution (Monitor API, steps from markers)."""

from __future__ import annotations

import asyncio

from tests.api.conftest import Api
from tests.api.executr_helpers import SHA, claim_body, job

V1 = "/api/v1"


async def test_submit_claim_complete_shows_as_an_execution_with_marker_steps(api: Api) -> None:
    status, created = await api("POST", f"{V1}/jobs", json=job())
    assert status == 201
    assert created["status"] == "pending" and created["type"] == "build"
    job_id = created["id"]

    status, claimed = await api("POST", f"{V1}/jobs/claim", json=claim_body())
    assert status == 200
    assert claimed["id"] == job_id and claimed["status"] == "running"
    assert claimed["binary_sha256"] == SHA and claimed["arguments"] == ["a", "b"]
    assert claimed["env_variables"] == {"K": "v"} and claimed["executor_id"] == "worker-1"

    # a running job is a running execution, on its executor
    status, detail = await api("GET", f"/api/executions/{job_id}")
    assert status == 200
    assert detail["data"]["execution"]["status"] == "running"

    status, _ = await api("PUT", f"{V1}/jobs/{job_id}/heartbeat", json={"executor_id": "worker-1"})
    assert status == 204
    stdout = "starting\nSTEP_START: compile\ncompiling\nSTEP_COMPLETE: compile\ndone\n"
    status, _ = await api("PUT", f"{V1}/jobs/{job_id}/complete",
                          json={"executor_id": "worker-1", "stdout": stdout, "stderr": "warn\n", "exit_code": 0})
    assert status == 204

    status, got = await api("GET", f"{V1}/jobs/{job_id}")
    assert status == 200
    assert got["status"] == "completed" and got["exit_code"] == 0
    assert got["stdout"] == stdout and got["stderr"] == "warn\n"
    assert [a["status"] for a in got["attempts"]] == ["completed"]
    assert got["attempts"][0]["executor_ip"] == "10.0.0.1"

    status, detail = await api("GET", f"/api/executions/{job_id}")
    execution = detail["data"]["execution"]
    assert execution["status"] == "completed"
    names = [s["name"] for s in detail["data"]["steps"]]
    assert "compile" in names, names
    status, lines = await api("GET", f"/api/executions/{job_id}/logs")
    by_text = {entry["content"]: entry for entry in lines["data"]["lines"]}
    assert by_text["compiling"]["step_name"] == "compile" and by_text["compiling"]["stream"] == "stdout"
    assert by_text["warn"]["stream"] == "stderr"


async def test_fail_keeps_message_and_exit_code(api: Api) -> None:
    _, created = await api("POST", f"{V1}/jobs", json=job())
    await api("POST", f"{V1}/jobs/claim", json=claim_body())
    status, _ = await api("PUT", f"{V1}/jobs/{created['id']}/fail",
                          json={"executor_id": "worker-1", "error_message": "boom", "stderr": "bad\n",
                                "exit_code": 3})
    assert status == 204
    _, got = await api("GET", f"{V1}/jobs/{created['id']}")
    assert got["status"] == "failed" and got["error_message"] == "boom" and got["exit_code"] == 3
    _, detail = await api("GET", f"/api/executions/{created['id']}")
    assert detail["data"]["execution"]["status"] == "failed"
    assert detail["data"]["execution"]["error_message"] == "boom"


async def test_priority_then_fifo(api: Api) -> None:
    order = [("a", "best_effort"), ("b", "background"), ("c", "foreground"), ("d", "background"),
             ("e", "foreground")]
    for name, priority in order:
        status, _ = await api("POST", f"{V1}/jobs", json=job(name, priority))
        assert status == 201
    claimed = []
    for _ in order:
        status, body = await api("POST", f"{V1}/jobs/claim", json=claim_body())
        assert status == 200
        claimed.append(body["type"])
    assert claimed == ["c", "e", "b", "d", "a"]
    status, _ = await api("POST", f"{V1}/jobs/claim", json=claim_body())
    assert status == 204


async def test_cancel_pending_running_unknown_malformed(api: Api) -> None:
    _, first = await api("POST", f"{V1}/jobs", json=job("first", "foreground"))
    _, second = await api("POST", f"{V1}/jobs", json=job("second"))
    await api("POST", f"{V1}/jobs/claim", json=claim_body())  # takes `first`
    status, _ = await api("DELETE", f"{V1}/jobs/{second['id']}")
    assert status == 204
    _, got = await api("GET", f"{V1}/jobs/{second['id']}")
    assert got["status"] == "cancelled"
    _, detail = await api("GET", f"/api/executions/{second['id']}")
    assert detail["data"]["execution"]["status"] == "cancelled"
    status, body = await api("DELETE", f"{V1}/jobs/{first['id']}")
    assert status == 400 and "running" in body["error"]
    status, body = await api("DELETE", f"{V1}/jobs/{second['id']}")
    assert status == 400
    status, body = await api("DELETE", f"{V1}/jobs/00000000-0000-4000-8000-000000000000")
    assert status == 404 and "error" in body
    status, body = await api("DELETE", f"{V1}/jobs/not-a-uuid")
    assert status == 400 and body["context"]["id"] == "not-a-uuid"
    # a cancelled job is never claimed
    status, _ = await api("POST", f"{V1}/jobs/claim", json=claim_body("w2"))
    assert status == 204


async def test_reports_guarded_by_owner_and_state(api: Api) -> None:
    _, created = await api("POST", f"{V1}/jobs", json=job())
    job_id = created["id"]
    # not running yet
    status, body = await api("PUT", f"{V1}/jobs/{job_id}/complete", json={"executor_id": "worker-1"})
    assert status == 400 and "not running" in body["error"]
    await api("POST", f"{V1}/jobs/claim", json=claim_body())
    for action in ("heartbeat", "complete", "fail"):
        status, body = await api("PUT", f"{V1}/jobs/{job_id}/{action}", json={"executor_id": "intruder"})
        assert status == 409 and "worker-1" in body["error"], action
    status, _ = await api("PUT", f"{V1}/jobs/00000000-0000-4000-8000-000000000000/heartbeat",
                          json={"executor_id": "worker-1"})
    assert status == 404
    status, _ = await api("PUT", f"{V1}/jobs/{job_id}/complete", json={"executor_id": "worker-1"})
    assert status == 204
    status, body = await api("PUT", f"{V1}/jobs/{job_id}/complete", json={"executor_id": "worker-1"})
    assert status == 400


async def test_two_concurrent_claimers_never_share_a_job(api: Api) -> None:
    for i in range(20):
        await api("POST", f"{V1}/jobs", json=job(f"j{i}"))

    async def claimer(name: str) -> list[str]:
        got = []
        while True:
            status, body = await api("POST", f"{V1}/jobs/claim", json=claim_body(name))
            if status == 204:
                return got
            got.append(body["id"])

    a, b = await asyncio.gather(claimer("w-a"), claimer("w-b"))
    assert len(a) + len(b) == 20
    assert not set(a) & set(b)


async def test_long_poll_claim_wakes_on_submit(api: Api) -> None:
    waiting = asyncio.create_task(api("POST", f"{V1}/jobs/claim?wait=10", json=claim_body()))
    await asyncio.sleep(0)  # the claim is sent; it waits in the server for a job
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, created = await api("POST", f"{V1}/jobs", json=job())
    status, body = await asyncio.wait_for(waiting, 5)
    assert status == 200 and body["id"] == created["id"]
    assert loop.time() - started < 2
    status, _ = await api("POST", f"{V1}/jobs/claim?wait=0.05", json=claim_body())
    assert status == 204


async def test_a_job_queued_while_a_long_poll_claims_is_never_missed(api: Api) -> None:
    """A job submitted at the moment a waiting claim looks (and finds nothing) still wakes it: the
    claim takes the wake-up signal before it looks. Each round must answer at once, never after
    the long poll's 10 s."""
    for _ in range(60):
        claiming = asyncio.create_task(api("POST", f"{V1}/jobs/claim?wait=10", json=claim_body()))
        _, created = await api("POST", f"{V1}/jobs", json=job())
        status, body = await asyncio.wait_for(claiming, 3)
        assert status == 200 and body["id"] == created["id"]


async def test_validation_errors_are_documented_400s(api: Api) -> None:
    bad = [
        job("has space"),
        job(binary_url="ftp://example.com/bin"),
        job(binary_sha256="abc"),
        job(priority="urgent"),
        {"binary_url": "https://example.com/bin", "binary_sha256": SHA},
    ]
    for body in bad:
        status, answer = await api("POST", f"{V1}/jobs", json=body)
        assert status == 400, body
        assert isinstance(answer["error"], str) and answer["context"]["fields"]
    status, answer = await api("POST", f"{V1}/jobs", data=b"{nope", headers={"Content-Type": "application/json"})
    assert status == 400 and "JSON" in answer["error"]
    status, answer = await api("GET", f"{V1}/jobs?limit=1001")
    assert status == 400 and "limit" in answer["error"]
    status, answer = await api("GET", f"{V1}/jobs?priority=urgent")
    assert status == 400


async def test_list_filters_any_subset_limit_offset(api: Api) -> None:
    for name, priority in [("x", "foreground"), ("y", "background"), ("x", "background")]:
        await api("POST", f"{V1}/jobs", json=job(name, priority))
    _, all_jobs = await api("GET", f"{V1}/jobs")
    assert len(all_jobs) == 3 and all(j["status"] == "pending" for j in all_jobs)
    _, xs = await api("GET", f"{V1}/jobs?type=x")
    assert {j["type"] for j in xs} == {"x"} and len(xs) == 2
    _, bg = await api("GET", f"{V1}/jobs?priority=background")
    assert len(bg) == 2
    _, both = await api("GET", f"{V1}/jobs?type=x&priority=background&status=pending")
    assert len(both) == 1
    _, page = await api("GET", f"{V1}/jobs?limit=2&offset=2")
    assert len(page) == 1
    _, none = await api("GET", f"{V1}/jobs?status=running")
    assert none == []


async def test_bulk_submit_partial_failure_and_bulk_cancel(api: Api) -> None:
    status, body = await api("POST", f"{V1}/jobs/bulk", json=[job("ok1"), job("bad type"), job("ok2")])
    assert status == 206
    assert body["successful"] == 2 and body["failed"] == 1
    assert [r["success"] for r in body["results"]] == [True, False, True]
    ids = [r["job_id"] for r in body["results"] if r["success"]]
    status, body = await api("POST", f"{V1}/jobs/bulk", json=[job("ok3")])
    assert status == 201
    status, body = await api("POST", f"{V1}/jobs/bulk", json=[job()] * 101)
    assert status == 400
    status, body = await api("POST", f"{V1}/jobs/bulk/cancel",
                             json={"job_ids": [*ids, "junk", "00000000-0000-4000-8000-000000000000"]})
    assert status == 200
    assert body["cancelled"] == 2 and body["failed"] == 2 and len(body["errors"]) == 2
    assert [r["cancelled"] for r in body["results"]] == [True, True, False, False]


async def test_a_bulk_is_claimed_in_the_order_given(api: Api) -> None:
    status, body = await api("POST", f"{V1}/jobs/bulk", json=[job(f"n{n}") for n in range(100)])
    assert status == 201
    ids = [r["job_id"] for r in body["results"]]
    claimed = []
    for _ in ids:
        status, got = await api("POST", f"{V1}/jobs/claim", json=claim_body())
        assert status == 200
        claimed.append(got["id"])
    assert claimed == ids


async def test_output_over_a_mebibyte_is_truncated_on_a_character(api: Api) -> None:
    _, created = await api("POST", f"{V1}/jobs", json=job())
    await api("POST", f"{V1}/jobs/claim", json=claim_body())
    big = ("é" * 100 + "\n") * 10_500  # about 2 MiB of two-byte characters
    status, _ = await api("PUT", f"{V1}/jobs/{created['id']}/complete",
                          json={"executor_id": "worker-1", "stdout": big, "stderr": "", "exit_code": 0})
    assert status == 204
    _, got = await api("GET", f"{V1}/jobs/{created['id']}")
    kept = got["stdout"].encode()
    assert len(kept) <= 1024 * 1024
    assert "output truncated" in got["stdout"].splitlines()[-1]
    assert "\ufffd" not in got["stdout"]


async def test_monitor_cancel_of_a_queued_job_cancels_the_job(api: Api) -> None:
    _, created = await api("POST", f"{V1}/jobs", json=job())
    status, _ = await api("POST", f"/api/executions/{created['id']}/cancel")
    assert status == 200
    _, got = await api("GET", f"{V1}/jobs/{created['id']}")
    assert got["status"] == "cancelled"
    status, _ = await api("POST", f"{V1}/jobs/claim", json=claim_body())
    assert status == 204


async def test_one_job_reads_the_same_in_every_answer(api: Api) -> None:
    _, created = await api("POST", f"{V1}/jobs", json=job())
    _, listed = await api("GET", f"{V1}/jobs")
    _, claimed = await api("POST", f"{V1}/jobs/claim", json=claim_body())
    _, got = await api("GET", f"{V1}/jobs/{created['id']}")
    assert created["created_at"] == listed[0]["created_at"] == claimed["created_at"] == got["created_at"]
    assert created["created_at"].endswith("Z") and got["attempts"][0]["started_at"].endswith("Z")
    assert "ended_at" not in got["attempts"][0]

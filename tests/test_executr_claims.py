"""A claim answered is a claim kept: 16 concurrent claimers against a real `stepflow serve`, which is
killed (SIGKILL) while they claim, then started again on the same store. Every job answered as
claimed is still held by the executor it was answered to; none goes to a second executor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from api_compat.executr.client import ExecutrClient, ExecutrError, ExecutrUnavailable

ROOT = Path(__file__).resolve().parents[1]
SHA = "0" * 64
JOBS = 400
CLAIMERS = 16


@contextlib.asynccontextmanager
async def serve(data_dir: Path, cwd: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`stepflow serve` (no job goes stale during the test); killed at the end if still running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEPFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["STEPFLOW_EXECUTR_HEARTBEAT_TIMEOUT"] = "3600"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stepflow.main", "serve", "--port", "0", "--ws-port", "0",
        "--data-dir", str(data_dir), cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            first = (await process.stdout.readline()).decode()
        match = re.search(r"serving (http://\S+)", first)
        assert match is not None, f"stepflow serve did not start: {first!r}"
        yield process, match[1]
    finally:
        if process.returncode is None:
            process.kill()
        async with asyncio.timeout(20):
            await process.wait()


def job(n: int) -> dict[str, object]:
    return {"type": f"durable-{n}", "binary_url": "file:///bin/true", "binary_sha256": SHA, "priority": "foreground"}


async def test_claims_answered_before_a_kill_9_are_still_held_by_their_executors_after_a_restart(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    answered: dict[str, str] = {}  # job id -> the executor it was answered to
    twice: list[str] = []
    async with serve(data, tmp_path) as (server, url):
        async with ExecutrClient(url, connections=CLAIMERS * 2) as client:
            for first in range(0, JOBS, 100):
                await client.submit_many([job(n) for n in range(first, first + 100)])
            killed = asyncio.Event()

            async def claimer(name: str) -> None:
                while True:
                    try:
                        claimed = (await client.claim(name, "127.0.0.1")).job
                    except (ExecutrUnavailable, ExecutrError):
                        return  # the server is gone
                    if claimed is None:
                        return
                    if claimed["id"] in answered:
                        twice.append(claimed["id"])
                    answered[claimed["id"]] = name
                    if len(answered) >= JOBS // 2 and not killed.is_set():
                        killed.set()
                        server.send_signal(signal.SIGKILL)  # while the others' claims are in flight

            async with asyncio.timeout(60):
                await asyncio.gather(*(claimer(f"executor-{n}") for n in range(CLAIMERS)))
            assert killed.is_set(), "the claimers ran out of jobs before the kill"
    assert server.returncode not in (None, 0)  # killed, no clean shutdown
    assert not twice

    async with serve(data, tmp_path) as (server, url):
        async with ExecutrClient(url) as client:
            for job_id, executor in answered.items():
                got = await client.get(job_id)
                assert (got["status"], got["executor_id"]) == ("running", executor), job_id
            # claims committed while their answers were lost with the server: held by the executors
            # that asked (back in the queue when their heartbeats are due)
            running = await client.list(status="running", limit=1000)
            unanswered = {j["id"] for j in running if j["id"] not in answered}
            assert all(j["executor_id"].startswith("executor-") for j in running)
            assert len(unanswered) <= CLAIMERS
            # the rest go to new executors, never one of those claimed before
            later: set[str] = set()
            async with asyncio.timeout(60):
                while (claimed := (await client.claim("after-restart", "127.0.0.1")).job) is not None:
                    assert claimed["id"] not in answered and claimed["id"] not in unanswered
                    assert claimed["id"] not in later
                    later.add(claimed["id"])
            assert len(answered) + len(unanswered) + len(later) == JOBS
            # a job answered just before the kill ends as its executor reports, its claim an attempt
            job_id, executor = next(reversed(answered.items()))
            await client.complete(job_id, executor, stdout="done\n", stderr="", exit_code=0)
            got = await client.get(job_id)
            assert got["status"] == "completed" and got["stdout"] == "done\n"
            assert [(a["executor_id"], a["status"]) for a in got["attempts"]] == [(executor, "completed")]
        server.terminate()

"""The executr API's claim path: claims per second with 2,000 jobs queued, at 1 and 16 concurrent
claimers, and the latency from a submit to its claim by an idle long-polling claimer.

The server is `stepflow serve` in a child process (its own event loop), the clients here.

    .venv/bin/python bench/executr_claims.py [--jobs 2000] [--latency-samples 200]

Goals (issue 13): >= 2,000 claims/s at 16 claimers; submit -> claim p99 <= 50 ms. The reference
(Go + PostgreSQL) measured 191-488 claims/s at 1 claimer and 400-632/s at 16; its executor polls
every 5 s (a median of 2.6 s from submit to start).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
JOB = {"type": "bench", "binary_url": "https://example.com/bin",
       "binary_sha256": hashlib.sha256(b"bench").hexdigest(), "priority": "background"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def queue(session: aiohttp.ClientSession, url: str, count: int) -> None:
    for start in range(0, count, 100):
        async with session.post(f"{url}/api/v1/jobs/bulk", json=[JOB] * min(100, count - start)) as resp:
            assert resp.status == 201, await resp.text()


async def claims_per_second(session: aiohttp.ClientSession, url: str, count: int, claimers: int) -> float:
    await queue(session, url, count)

    async def claimer(name: str) -> int:
        got = 0
        while True:
            async with session.post(f"{url}/api/v1/jobs/claim", json={"executor_id": name}) as resp:
                if resp.status == 204:
                    return got
                await resp.read()
                got += 1

    started = time.perf_counter()
    claimed = sum(await asyncio.gather(*(claimer(f"c{i}") for i in range(claimers))))
    elapsed = time.perf_counter() - started
    assert claimed == count, (claimed, count)
    return claimed / elapsed


async def submit_to_claim(session: aiohttp.ClientSession, url: str, samples: int) -> list[float]:
    latencies = []
    for _ in range(samples):
        waiting = asyncio.create_task(session.post(f"{url}/api/v1/jobs/claim?wait=10",
                                                   json={"executor_id": "idle"}))
        await asyncio.sleep(0.01)  # the claim is waiting in the server
        started = time.perf_counter()
        async with session.post(f"{url}/api/v1/jobs", json=JOB) as resp:
            assert resp.status == 201
        async with await waiting as resp:
            assert resp.status == 200
            await resp.read()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def start_server(data: str, port: int) -> subprocess.Popen[bytes]:
    # no job goes stale while the bench holds it unreported
    env = {**os.environ, "STEPFLOW_WEBSOCKET_PORT": "off", "STEPFLOW_EXECUTR_HEARTBEAT_TIMEOUT": "3600"}
    return subprocess.Popen([sys.executable, "-m", "stepflow_tui.cli.main", "serve", "--data-dir", data,
                             "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        server = start_server(data, port)
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
                for _ in range(200):
                    try:
                        async with session.get(f"{url}/api/v1/health") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.05)
                for claimers in (1, 16):
                    rate = await claims_per_second(session, url, args.jobs, claimers)
                    print(f"claims/s with {args.jobs} queued, {claimers:2d} claimer(s): {rate:,.0f}")
                lat = sorted(await submit_to_claim(session, url, args.latency_samples))
                p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
                print(f"submit -> claim (long-poll), {len(lat)} samples: p50 {statistics.median(lat):.1f} ms, "
                      f"p99 {p99:.1f} ms")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=200)
    asyncio.run(main(parser.parse_args()))

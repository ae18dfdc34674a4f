"""HTTP latency and throughput of the StepFlow Monitor API with 10,000 executions stored.

The server (engine + SqliteStore + ApiListener) runs in a child process, the client here, each on
its own event loop, so the figures are the server's and not the client's.

    .venv/bin/python bench/api_http.py [--executions 10000] [--requests 3000] [--concurrency 32]

Goals (issue 4): median latency at concurrency 1 <= 1 ms for GET /api/health and
GET /api/executions?limit=10; >= 3,000 requests/s at concurrency 32.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import psutil  # noqa: E402

from bench.child_server import child_server, serve_if_asked  # noqa: E402

ROUTES = ["/api/health", "/api/executions?limit=10"]


async def seed(data_dir: Path, count: int) -> None:
    from engine.events import ExecutionCreated, ExecutionFinished, ExecutionStarted
    from engine.model import Execution, ExecutionStatus, Step, StepKind, new_id, utcnow
    from storage import SqliteStore
    from storage.paths import database_path

    store = SqliteStore(database_path(data_dir))
    await store.open()
    try:
        base = utcnow() - timedelta(days=30)
        batch = []
        for i in range(count):
            created = base + timedelta(seconds=i * 60)
            ex = Execution(id=new_id(), name=f"bench {i}", command=f"echo {i}", working_directory="/tmp",
                           user="bench", tags=["bench"], created_at=created, targets=["local"])
            branch = Step(id=new_id(), execution_id=ex.id, name="local", kind=StepKind.BRANCH)
            batch.append(ExecutionCreated(ex.snapshot(), (branch,)))
            ex.status = ExecutionStatus.RUNNING
            ex.started_at = created
            batch.append(ExecutionStarted(ex.snapshot()))
            ex.status = ExecutionStatus.COMPLETED if i % 10 else ExecutionStatus.FAILED
            ex.exit_code = 0 if i % 10 else 1
            ex.completed_at = created + timedelta(seconds=5)
            batch.append(ExecutionFinished(ex.snapshot()))
            if len(batch) >= 2000:
                await store.apply(batch)
                batch = []
        if batch:
            await store.apply(batch)
    finally:
        await store.close()


async def run_server(data_dir: Path, port_file: Path) -> None:
    from api_compat import ApiConfig, ApiListener
    from stepflow_tui.cli.wiring import EngineOptions, start_engine

    # built as `stepflow serve` builds it (the composition root's GC tuning included)
    engine = await start_engine(data_dir, EngineOptions(targets={}))
    listener = ApiListener(engine, ApiConfig(port=0, ws_port=None, data_dir=data_dir))
    await listener.start()
    await asyncio.to_thread(port_file.write_text, str(listener.port))
    try:
        await asyncio.Event().wait()
    finally:
        await listener.stop()
        await engine.shutdown()


async def latency(session: aiohttp.ClientSession, url: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        times.append(time.perf_counter() - started)
    return times


async def throughput(url: str, total: int, concurrency: int, server: psutil.Process) -> tuple[float, float]:
    """Requests per second, and the server's CPU time per request (user + system, in seconds): the
    second holds on a machine shared with other work, the first does not."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(url) as resp:
                    await resp.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the connections
        remaining = total
        cpu = server.cpu_times()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = server.cpu_times()
        used = (cpu_after.user - cpu.user) + (cpu_after.system - cpu.system)
        return total / elapsed, used / total


async def measure(base: str, n: int, total: int, concurrency: int, server: psutil.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for route in ROUTES:
            await latency(session, base + route, 200)  # warm up
            times = await latency(session, base + route, n)
            rps, cpu = await throughput(base + route, total, concurrency, server)
            times.sort()
            print(f"GET {route:28s} median {statistics.median(times) * 1000:6.3f} ms  "
                  f"p99 {times[int(len(times) * 0.99)] * 1000:6.3f} ms  "
                  f"{rps:8.0f} req/s at concurrency {concurrency}  "
                  f"server CPU {cpu * 1e6:5.0f} us/request")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if serve_if_asked(args.serve, run_server):
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        started = time.perf_counter()
        asyncio.run(seed(data_dir, args.executions))
        print(f"seeded {args.executions} executions in {time.perf_counter() - started:.1f} s")
        with child_server(__file__, data_dir, Path(tmp) / "port") as (server, port):
            base = f"http://127.0.0.1:{port}"
            asyncio.run(measure(base, args.requests, args.requests * 3, args.concurrency, psutil.Process(server.pid)))


if __name__ == "__main__":
    main()

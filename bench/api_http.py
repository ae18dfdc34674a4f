"""HTTP latency and throughput of the StepFlow Monitor API with 10,000 executions stored.

The server (engine + SqliteStore + ApiListener) runs in a child process, the client here, each on
its own event loop, so the figures are the server's and not the client's.

    .venv/bin/python bench/api_http.py [--executions 10000] [--requests 3000] [--concurrency 32]

Goals (issue 4): median latency at concurrency 1 <= 1 ms for GET /api/health and
GET /api/executions?limit=10; >= 3,000 requests/s at concurrency 32.
Goals (issue 16), with 1,000 executions stored (`--executions 1000`): GET /api/executions?limit=10
<= 0.3 ms median at concurrency 1; POST /api/executions (`true`) >= 1,000 creations/s at concurrency
32, GET /api/health at the same concurrency beside it. Every execution created must then run to its
end (the server's admission queue holds most of them a while): the bench waits for them and counts.

Measured (issue 16, load 9-10 on the 2 cores, main's tree run with this script just before):
  POST: main 289 creations/s, median 78.6 ms, p99 452 ms, 893 us server CPU each (its run included);
        now  585 creations/s, median 45.3 ms, p99 205 ms, 770 us (3,000 created, all completed)
  GET /api/executions?limit=10 at concurrency 1: 0.303 ms → 0.287 ms median
  (GET /api/health at concurrency 32 beside them: 3,393 and 3,273 requests/s)

Measured (issue 16, one dispatching middleware instead of four chained per surface; main at 67baf1a
with this script, interleaved, six pairs, load 3.4-6.5 on the 2 cores shared with other work), at
concurrency 1, median of each run, main → this tree:
  GET /api/executions?limit=10: 0.288/0.290/0.285/0.386/0.367/0.295 → 0.274/0.274/0.287/0.358/0.345/0.333 ms
  GET /api/health:              0.273/0.274/0.294/0.421/0.293/0.363 → 0.269/0.253/0.272/0.407/0.330/0.330 ms
  POST /api/executions at concurrency 32 (three of the pairs): 638/525/749 → 1,022/513/784 creations/s
  The load moves these more than the change does. What it removes, counted by cProfile in the server
  (3,000 requests, deterministic): Python function calls per GET /api/executions?limit=10 266 → 218,
  per GET /api/health 281 → 220 (the four surfaces' middlewares and their `owns`, the access check
  of a surface that checks nothing, the Host parsing and the timestamp's calls).
  "server CPU" at concurrency 1 includes the event loop's and the kernel's work of each round trip.
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
    from stepflow.wiring import EngineOptions, start_engine

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


async def creations(base: str, total: int, concurrency: int, server: psutil.Process) -> list[str]:
    """POST /api/executions of `true`, `total` of them from `concurrency` clients: prints creations/s,
    the median and p99 answer and the server's CPU per creation; returns the ids."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    ids: list[str] = []
    times: list[float] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                async with session.post(base + "/api/executions", json={"command": "true", "name": "bench"}) as resp:
                    body = await resp.json()
                    assert resp.status == 201, (resp.status, body)
                times.append(time.perf_counter() - started)
                ids.append(body["data"]["execution_id"])

        cpu = server.cpu_times()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = server.cpu_times()
    used = (cpu_after.user - cpu.user) + (cpu_after.system - cpu.system)
    times.sort()
    print(f"POST /api/executions (true)    median {statistics.median(times) * 1000:6.3f} ms  "
          f"p99 {times[int(len(times) * 0.99)] * 1000:6.3f} ms  "
          f"{total / elapsed:8.0f} creations/s at concurrency {concurrency}  "
          f"server CPU {used / total * 1e6:5.0f} us/creation (the runs that follow included)")
    return ids


async def all_ran(base: str, ids: list[str], timeout: float = 600.0) -> None:
    """Wait until every created execution ended; print how many completed."""
    deadline = time.monotonic() + timeout
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        pending = set(ids)
        completed = 0
        while pending and time.monotonic() < deadline:
            for execution_id in list(pending):
                async with session.get(f"{base}/api/executions/{execution_id}") as resp:
                    status = (await resp.json())["data"]["execution"]["status"]
                if status in ("completed", "failed", "cancelled"):
                    pending.discard(execution_id)
                    completed += status == "completed"
            if pending:
                await asyncio.sleep(0.5)
    print(f"  of {len(ids)} created: {completed} completed, {len(ids) - len(pending) - completed} failed "
          f"or cancelled, {len(pending)} not ended ({time.perf_counter() - started:.1f} s after the last "
          f"creation){'' if not pending and completed == len(ids) else '  <-- NOT ALL RAN'}")


async def measure(base: str, n: int, total: int, concurrency: int, server: psutil.Process, posts: int) -> None:
    if posts:
        ids = await creations(base, posts, concurrency, server)
        await all_ran(base, ids)
    async with aiohttp.ClientSession() as session:
        for route in ROUTES:
            await latency(session, base + route, 200)  # warm up
            before = server.cpu_times()
            times = await latency(session, base + route, n)
            after = server.cpu_times()
            serial_cpu = ((after.user - before.user) + (after.system - before.system)) / n
            rps, cpu = await throughput(base + route, total, concurrency, server)
            times.sort()
            print(f"GET {route:28s} median {statistics.median(times) * 1000:6.3f} ms  "
                  f"p99 {times[int(len(times) * 0.99)] * 1000:6.3f} ms  "
                  f"(server CPU {serial_cpu * 1e6:3.0f} us)  "
                  f"{rps:6.0f} req/s at concurrency {concurrency}  "
                  f"(server CPU {cpu * 1e6:3.0f} us/request)")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--posts", type=int, default=2_000, help="POST /api/executions of `true` (0: none)")
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
            asyncio.run(measure(base, args.requests, args.requests * 3, args.concurrency, psutil.Process(server.pid),
                                args.posts))


if __name__ == "__main__":
    main()

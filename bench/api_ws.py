"""WebSocket fan-out: N clients subscribed while an execution prints L lines/s for D seconds.

The server (engine + SqliteStore + ApiListener) runs in one child process, the clients in P other
processes. Each client subscribes to every execution ("*") and records, for every status message
(execution_started, step_update, execution_completed) and a sample of log entries, the delay
between the server's `timestamp` and its arrival. The same execution runs with no client just
before, as the baseline of the engine's ingestion rate (lines / (completed_at - started_at)); the
machine is shared, so each round has its own baseline and loaded run, and the clients connect anew.

    .venv/bin/python bench/api_ws.py [--clients 1000] [--rate 10000] [--seconds 5] [--procs 2] [--rounds 3]

Goals (issue 4): every status event reaches every client, p99 delivery <= 250 ms, ingestion rate
drops by less than 20%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.child_server import child_server, serve_if_asked  # noqa: E402

STATUS = {"execution_started", "step_update", "execution_completed"}


def producer(rate: int, seconds: float, step_every: int) -> str:
    """A paced command printing `rate` lines/s in 100 batches/s, a STEP_START every `step_every`."""
    return (
        "python3 -u -c '\n"
        "import sys, time\n"
        f"rate, seconds, every = {rate}, {seconds}, {step_every}\n"
        "per = max(rate // 100, 1); n = 0; start = time.monotonic(); total = int(rate * seconds)\n"
        "out = sys.stdout\n"
        "while n < total:\n"
        "    chunk = []\n"
        "    for _ in range(per):\n"
        "        if n % every == 0: chunk.append(\"STEP_START:part-%d\" % (n // every))\n"
        "        else: chunk.append(\"line %d of the fan-out benchmark, some text to look like a log\" % n)\n"
        "        n += 1\n"
        "    out.write(\"\\n\".join(chunk) + \"\\n\"); out.flush()\n"
        "    delay = start + n / rate - time.monotonic()\n"
        "    if delay > 0: time.sleep(delay)\n"
        "'"
    )


async def run_server(data_dir: Path, port_file: Path) -> None:
    from api_compat import ApiConfig, ApiListener
    from stepflow.wiring import EngineOptions, start_engine

    # built as `stepflow serve` builds it (the composition root's GC tuning included)
    engine = await start_engine(data_dir, EngineOptions(targets={}))
    listener = ApiListener(engine, ApiConfig(port=0, ws_port=0, data_dir=data_dir))
    await listener.start()
    await asyncio.to_thread(port_file.write_text, f"{listener.port} {listener.ws_port}")
    try:
        await asyncio.Event().wait()
    finally:
        await listener.stop()
        await engine.shutdown()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its waited-for children: the commands it ran), Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _clients(url: str, n: int, ready: mp.Event, results: mp.Queue) -> None:  # type: ignore[valid-type]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def connect() -> aiohttp.ClientWebSocketResponse:
            ws = await session.ws_connect(url, max_msg_size=0)
            await ws.receive()
            await ws.send_str('{"type": "subscribe", "data": {"execution_id": "*"}}')
            await ws.receive()
            return ws

        sockets: list[aiohttp.ClientWebSocketResponse] = []
        for i in range(0, n, 50):  # the server's listen backlog is finite
            sockets += await asyncio.gather(*(connect() for _ in range(min(50, n - i))))
        ready.set()
        cpu = time.process_time()

        async def read(ws: aiohttp.ClientWebSocketResponse) -> dict:
            status_delays: list[float] = []
            log_delays: list[float] = []
            counts = {"status": 0, "log": 0, "dropped": 0}
            i = 0
            async for msg in ws:
                data = msg.data
                if '"type":"log_entry"' in data[:30]:
                    counts["log"] += 1
                    i += 1
                    if i % 50 == 0:
                        log_delays.append(time.time() - _ts(json.loads(data)["timestamp"]))
                    continue
                m = json.loads(data)
                if m["type"] in STATUS:
                    counts["status"] += 1
                    status_delays.append(time.time() - _ts(m["timestamp"]))
                    if m["type"] == "execution_completed":
                        break
                elif m["type"] == "error" and m["data"]["error_code"] == "LOG_ENTRIES_DROPPED":
                    counts["dropped"] += m["data"]["dropped_count"]
            return {"status_delays": status_delays, "log_delays": log_delays, **counts}

        out = await asyncio.gather(*(read(ws) for ws in sockets))
        out[0]["cpu"] = time.process_time() - cpu
        results.put(out)
        for ws in sockets:
            await ws.close()


def client_process(url: str, n: int, ready: mp.Event, results: mp.Queue) -> None:  # type: ignore[valid-type]
    asyncio.run(_clients(url, n, ready, results))


async def run_execution(base: str, command: str) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.post(base + "/api/executions", json={"name": "fan-out", "command": command}) as resp:
            ex_id = (await resp.json())["data"]["execution_id"]
        while True:
            async with session.get(f"{base}/api/executions/{ex_id}") as resp:
                ex = (await resp.json())["data"]["execution"]
            if ex["status"] not in ("pending", "running"):
                return ex
            await asyncio.sleep(0.2)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--step-every", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if serve_if_asked(args.serve, run_server):
        return
    command = producer(args.rate, args.seconds, args.step_every)
    total_lines = int(args.rate * args.seconds)
    steps = -(-total_lines // args.step_every)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        with child_server(__file__, data_dir, Path(tmp) / "port", "-W", "ignore") as (server, ports):
            port, ws_port = ports.split()
            base = f"http://127.0.0.1:{port}"

            def rate_of(ex: dict) -> float:
                return total_lines / (_ts(ex["completed_at"]) - _ts(ex["started_at"]))

            rounds = []
            for r in range(args.rounds):
                baseline = asyncio.run(run_execution(base, command))
                ctx = mp.get_context("spawn")
                results: mp.Queue = ctx.Queue()
                readies = []
                procs = []
                per = [args.clients // args.procs + (1 if i < args.clients % args.procs else 0)
                       for i in range(args.procs)]
                started = time.perf_counter()
                for n in per:
                    ready = ctx.Event()
                    p = ctx.Process(target=client_process,
                                    args=(f"ws://127.0.0.1:{ws_port}/", n, ready, results))
                    p.start()
                    procs.append(p)
                    readies.append(ready)
                for ready in readies:
                    if not ready.wait(120):
                        raise SystemExit("clients did not connect")
                connected = time.perf_counter() - started
                server_cpu = _cpu_seconds(server.pid)
                loaded = asyncio.run(run_execution(base, command))
                server_cpu = _cpu_seconds(server.pid) - server_cpu
                outcomes = []
                for _ in procs:
                    outcomes.extend(results.get(timeout=300))
                for p in procs:
                    p.join(30)
                print(f"round {r + 1}: {args.clients} clients connected in {connected:.1f} s")
                rounds.append(report(baseline, loaded, outcomes, rate_of, total_lines, steps))
                print(f"  CPU during the loaded run: server {server_cpu:.1f} s, clients "
                      f"{sum(o.get('cpu', 0.0) for o in outcomes):.1f} s, for a run of "
                      f"{_ts(loaded['completed_at']) - _ts(loaded['started_at']):.1f} s on {os.cpu_count()} cores")
    if len(rounds) > 1:
        slower = sorted(x["slower"] for x in rounds)
        p99 = sorted(x["p99"] for x in rounds)
        print(f"over {len(rounds)} rounds: ingestion slower by {', '.join(f'{v:+.1f}%' for v in slower)}; "
              f"status p99 {', '.join(f'{v * 1000:.0f} ms' for v in p99)}; every status to every client: "
              f"{all(x['complete'] for x in rounds)}")


def report(baseline: dict, loaded: dict, outcomes: list[dict], rate_of, total_lines: int,  # noqa: ANN001
           steps: int) -> dict:
    print(f"  baseline (no client): {rate_of(baseline):,.0f} lines/s ingested")
    # execution started, branch started, each step added and finished, branch finished, completed
    expected_status = 1 + 1 + 2 * steps + 1 + 1
    status_counts = [o["status"] for o in outcomes]
    status_delays = [d for o in outcomes for d in o["status_delays"]]
    log_delays = [d for o in outcomes for d in o["log_delays"]]
    logs = sum(o["log"] for o in outcomes)
    dropped = sum(o["dropped"] for o in outcomes)
    drop_rate = rate_of(loaded) / rate_of(baseline)
    complete = min(status_counts) >= expected_status and len(outcomes) > 0
    print(f"  with {len(outcomes)} clients: {rate_of(loaded):,.0f} lines/s ingested "
          f"({(1 - drop_rate) * 100:+.1f}% slower than the baseline)")
    print(f"  status messages per client: min {min(status_counts)}, max {max(status_counts)} "
          f"(at least {expected_status} expected): {'every client got every one' if complete else 'MISSING'}")
    print(f"  status delivery: p50 {pct(status_delays, 0.5) * 1000:.0f} ms, "
          f"p99 {pct(status_delays, 0.99) * 1000:.0f} ms, max {max(status_delays) * 1000:.0f} ms")
    print(f"  log entries delivered: {logs:,} of {total_lines * len(outcomes):,} "
          f"({logs / (total_lines * len(outcomes)) * 100:.1f}%), {dropped:,} reported dropped; "
          f"sampled delivery p50 {pct(log_delays, 0.5) * 1000:.0f} ms, p99 {pct(log_delays, 0.99) * 1000:.0f} ms")
    return {"slower": (1 - drop_rate) * 100, "p99": pct(status_delays, 0.99), "complete": complete}


if __name__ == "__main__":
    main()

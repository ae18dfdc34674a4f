"""OpsConductor's figures over 100,000 stored branches: a target's performance and history,
execution analytics (every period and grouping), a job's metrics. Each is timed through the store
(the SQL, on a reader connection) and through HTTP (the route, on a real listener), median of 20.
Goal: <= 50 ms each.

    .venv/bin/python bench/opsconductor.py                 # 100,000 branches
    .venv/bin/python bench/opsconductor.py --branches 20000

`seed` writes history straight into the store's file (executions of the past 90 days, their branches
over the targets, 90% completed, 8% failed, 2% cancelled): the tests use it too.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Seeded:
    """One seeded execution: when, how it ended, on which targets (ids)."""

    job_id: int
    serial: str
    created_at: datetime
    status: str
    duration: float
    target_ids: tuple[int, ...]


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def seed(db_path: Path, targets: Sequence[tuple[int, str, str]], *, jobs: int, executions: int,
         branches_per_execution: int, days: float = 90, now: datetime | None = None, seed_value: int = 7,
         statuses: Sequence[str] | None = None, created: Sequence[datetime] | None = None) -> list[Seeded]:
    """`executions` executions of `jobs` new jobs, created over the last `days` (or at `created`),
    each on `branches_per_execution` of `targets` ((id, serial, name)). Statuses drawn 90/8/2 unless
    given (one per execution)."""
    rng = random.Random(seed_value)
    now = now or datetime.now(UTC)
    year = now.year
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("BEGIN IMMEDIATE")
    first_job = (conn.execute("SELECT coalesce(max(id), 0) FROM ops_jobs").fetchone()[0]) + 1
    job_serial_base = conn.execute("SELECT coalesce((SELECT value FROM counters WHERE name = ?), 0)",
                                   (f"opsconductor.jobs.{year}",)).fetchone()[0]
    job_rows = []
    for j in range(jobs):
        serial = f"J{year}{job_serial_base + j + 1:04d}"
        job_rows.append((first_job + j, str(uuid.uuid4()), serial, f"seeded job {j}", "", "command",
                         '[{"action_type": "command", "action_parameters": {"command": "true"}}]', "[]",
                         None, None, _iso(now - timedelta(days=days)), _iso(now)))
    conn.executemany("INSERT INTO ops_jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", job_rows)
    conn.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = ?",
                 (f"opsconductor.jobs.{year}", job_serial_base + jobs, job_serial_base + jobs))
    first_execution = conn.execute("SELECT coalesce(max(id), 0) FROM ops_executions").fetchone()[0] + 1
    first_branch = conn.execute("SELECT coalesce(max(id), 0) FROM ops_branches").fetchone()[0] + 1
    numbers: dict[int, int] = {}
    seeded: list[Seeded] = []
    executions_rows = []
    branch_rows = []
    for i in range(executions):
        job_index = i % jobs
        job_id = first_job + job_index
        number = numbers[job_id] = numbers.get(job_id, 0) + 1
        serial = f"{job_rows[job_index][2]}.{number:04d}"
        at = created[i] if created is not None else now - timedelta(seconds=rng.uniform(0, days * 86400))
        status = statuses[i] if statuses is not None else rng.choices(
            ("completed", "failed", "cancelled"), (90, 8, 2))[0]
        duration = round(rng.uniform(1, 300), 3)
        picked = tuple(rng.sample(list(targets), branches_per_execution))
        execution_id = first_execution + i
        executions_rows.append((execution_id, str(uuid.uuid4()), serial, job_id, number, None, None, status,
                                _iso(at), _iso(at + timedelta(seconds=duration)), duration, None, _iso(at)))
        for n, (target_id, target_serial, target_name) in enumerate(picked, 1):
            branch_rows.append((first_branch + len(branch_rows), str(uuid.uuid4()), f"{serial}.{n:04d}",
                                execution_id, n, job_id, target_id, target_serial, target_name, None, None, status,
                                _iso(at), _iso(at + timedelta(seconds=duration)), duration,
                                0 if status == "completed" else 1, None, _iso(at)))
        seeded.append(Seeded(job_id, serial, at, status, duration, tuple(t[0] for t in picked)))
    conn.executemany("INSERT INTO ops_executions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", executions_rows)
    conn.executemany("INSERT INTO ops_branches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     branch_rows)
    conn.executemany("INSERT INTO counters (name, value) VALUES (?, ?)",
                     [(f"opsconductor.job.{job_id}.executions", n) for job_id, n in numbers.items()])
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return seeded


async def _bench(branches: int) -> None:
    import aiohttp

    from api_compat import ApiConfig, ApiListener, create_token
    from engine.engine import Engine, EngineConfig
    from storage import SqliteStore
    from storage.paths import database_path

    with tempfile.TemporaryDirectory(prefix="stepflow-ops-bench-") as tmp:
        data = Path(tmp)
        engine = Engine(SqliteStore(database_path(data)), data, EngineConfig())
        await engine.start()
        listener = ApiListener(engine, ApiConfig(host="127.0.0.1", port=0, ws_port=None, data_dir=data))
        await listener.start()
        try:
            headers = {"Authorization": f"Bearer {create_token(data)}"}
            async with aiohttp.ClientSession(headers=headers) as session:
                created = []
                for i in range(20):
                    async with session.post(listener.url + "/api/targets",
                                            json={"name": f"host-{i:02d}", "type": "local"}) as resp:
                        created.append(await resp.json())
                targets = [(t["id"], t["target_serial"], t["name"]) for t in created]
                per_execution = 4
                started = time.perf_counter()
                seeded = seed(database_path(data), targets, jobs=50, executions=branches // per_execution,
                              branches_per_execution=per_execution)
                print(f"seeded {len(seeded):,} executions, {len(seeded) * per_execution:,} branches "
                      f"in {time.perf_counter() - started:.1f} s")
                store = engine.store
                since30 = datetime.now(UTC) - timedelta(days=30)
                since90 = datetime.now(UTC) - timedelta(days=90)
                target_id, target_serial = targets[0][0], targets[0][1]
                job_id = seeded[0].job_id
                job_serial = seeded[0].serial.split(".")[0]
                from api_compat.opsconductor.analytics import PERIODS, bucket_span

                hours = bucket_span(datetime.now(UTC), PERIODS["90d"], "hour")
                days = bucket_span(datetime.now(UTC), PERIODS["90d"], "day")
                store_cases = {
                    "target outcomes (30 d)": lambda: store.target_outcomes(target_id, since30),
                    "target outcomes (90 d)": lambda: store.target_outcomes(target_id, since90),
                    "target history (20)": lambda: store.target_history(target_id, limit=20, offset=0),
                    "target history (offset 4000)": lambda: store.target_history(target_id, limit=20, offset=4000),
                    "executions 90d by hour": lambda: store.execution_buckets(hours[0], "hour", hours[1]),
                    "executions 90d by day": lambda: store.execution_buckets(days[0], "day", days[1]),
                    "job outcomes (90 d)": lambda: store.execution_outcomes(since90, job_id=job_id),
                    "job per target (90 d)": lambda: store.job_target_outcomes(job_id, since90),
                }
                print(f"{'store':<34}{'median ms':>10}{'max ms':>10}")
                for name, call in store_cases.items():
                    times = []
                    for _ in range(20):
                        t0 = time.perf_counter()
                        await call()
                        times.append((time.perf_counter() - t0) * 1000)
                    print(f"{name:<34}{statistics.median(times):>10.1f}{max(times):>10.1f}")
                routes = [
                    f"/api/targets/{target_serial}/performance?days=30",
                    f"/api/targets/{target_serial}/performance?days=90",
                    f"/api/targets/{target_serial}/executions?limit=20&offset=0",
                    *(f"/api/analytics/executions?period={p}&group_by={g}" for p in ("24h", "7d", "30d", "90d")
                      for g in ("hour", "day", "week", "month")),
                    f"/api/analytics/jobs/{job_serial}/metrics?period=90d",
                ]
                print(f"{'HTTP':<58}{'median ms':>10}{'max ms':>10}")
                for path in routes:
                    times = []
                    for _ in range(20):
                        t0 = time.perf_counter()
                        async with session.get(listener.url + path) as resp:
                            assert resp.status == 200, (path, await resp.text())
                            await resp.read()
                        times.append((time.perf_counter() - t0) * 1000)
                    print(f"{path:<58}{statistics.median(times):>10.1f}{max(times):>10.1f}")
        finally:
            await listener.stop()
            await engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--branches", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(_bench(args.branches))


if __name__ == "__main__":
    main()

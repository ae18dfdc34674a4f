"""OpsConductor's figures over seeded history (bench/opsconductor.py's `seed`: rows of the past
written into the store's file): buckets of every grouping present and summed right, targets'
performance and history, a job's metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.opsconductor import Seeded, seed
from storage.paths import database_path
from tests.api.opsconductor_helpers import Ops, ops_server

AGO = [(timedelta(hours=1), "completed"), (timedelta(hours=2), "failed"), (timedelta(hours=30), "completed"),
       (timedelta(days=3), "completed"), (timedelta(days=3, hours=1), "cancelled"),
       (timedelta(days=10), "completed"), (timedelta(days=40), "failed"), (timedelta(days=100), "completed")]


def _start_of(label: str, unit: str) -> datetime:
    if unit == "hour":
        return datetime.fromisoformat(label.replace("Z", "+00:00"))
    if unit == "month":
        return datetime.fromisoformat(label + "-01").replace(tzinfo=UTC)
    return datetime.fromisoformat(label).replace(tzinfo=UTC)


async def _seeded(ops: Ops, data: Path) -> tuple[list[Seeded], datetime]:
    for name in ("web1", "web2"):
        status, _ = await ops.call("POST", "/api/targets", json={"name": name, "type": "local"})
        assert status == 201
    status, listed = await ops.call("GET", "/api/targets")
    targets = [(t["id"], t["target_serial"], t["name"]) for t in listed["data"] if t["name"] != "local"]
    now = datetime.now(UTC)
    history = seed(database_path(data), targets, jobs=1, executions=len(AGO), branches_per_execution=2,
                   now=now, created=[now - ago for ago, _ in AGO], statuses=[s for _, s in AGO])
    return history, now


async def test_execution_analytics_buckets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with ops_server(data) as ops:
        history, _now = await _seeded(ops, data)
        for period, unit in (("24h", "hour"), ("7d", "day"), ("30d", "week"), ("90d", "month"), ("90d", "hour")):
            status, body = await ops.call("GET", f"/api/analytics/executions?period={period}&group_by={unit}")
            assert status == 200, body
            starts = [_start_of(d["date"], unit) for d in body["data"]]
            assert starts == sorted(starts) and len(set(starts)) == len(starts)
            step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}.get(unit)
            if step is not None:  # every bucket present, the empty ones too
                assert all(b - a == step for a, b in zip(starts, starts[1:], strict=False))
            if unit == "week":
                assert all(s.weekday() == 0 for s in starts)
            inside = [h for h in history if h.created_at >= starts[0]]
            assert body["total_executions"] == len(inside) == sum(d["executions"] for d in body["data"])
            completed = sum(h.status == "completed" for h in inside)
            failed = sum(h.status == "failed" for h in inside)
            assert (body["successful_executions"], body["failed_executions"]) == (completed, failed)
            assert body["success_rate"] == round(100 * completed / len(inside), 2)
            for i, bucket in enumerate(body["data"]):
                end = starts[i + 1] if i + 1 < len(starts) else datetime.max.replace(tzinfo=UTC)
                mine = [h for h in inside if starts[i] <= h.created_at < end]
                assert bucket["executions"] == len(mine), (period, unit, bucket)
                assert bucket["successful"] == sum(h.status == "completed" for h in mine)
        status, day = await ops.call("GET", "/api/analytics/executions?period=7d&group_by=day")
        assert len(day["data"]) == 8 and day["total_executions"] == 5 and day["success_rate"] == 60.0
        status, hours = await ops.call("GET", "/api/analytics/executions?period=24h&group_by=hour")
        assert len(hours["data"]) == 25 and hours["total_executions"] == 2 and hours["success_rate"] == 50.0


async def test_target_performance_history_and_job_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with ops_server(data) as ops:
        history, _now = await _seeded(ops, data)
        status, perf = await ops.call("GET", f"/api/targets/T{datetime.now(UTC).year}0002/performance?days=30")
        assert status == 200, perf
        # within 30 days: 1 h, 2 h, 30 h, 3 d, 3 d 1 h, 10 d: 4 completed, 1 failed, 1 cancelled
        assert (perf["total_executions"], perf["successful_executions"], perf["failed_executions"]) == (6, 4, 1)
        assert perf["success_rate"] == 66.67
        expected = [h.duration for h in history[:6]]
        assert perf["average_duration"] == round(sum(expected) / len(expected), 2)
        assert [r["execution_serial"] for r in perf["recent_executions"]] == [h.serial for h in history]
        serial = perf["target_serial"]
        status, page = await ops.call("GET", f"/api/targets/{serial}/executions?limit=3&offset=2")
        assert (page["total"], page["limit"], page["offset"]) == (8, 3, 2)
        assert [e["execution_serial"] for e in page["executions"]] == [h.serial for h in history[2:5]]
        assert page["executions"][0]["job_name"] == "seeded job 0"

        job_serial = history[0].serial.split(".")[0]
        status, metrics = await ops.call("GET", f"/api/analytics/jobs/{job_serial}/metrics?period=7d")
        assert status == 200
        assert (metrics["total_executions"], metrics["successful_executions"], metrics["failed_executions"]) == (5, 3, 1)
        assert metrics["success_rate"] == 60.0
        assert [(t["target_name"], t["executions"], t["success_rate"]) for t in metrics["target_performance"]] == [
            ("web1", 5, 60.0), ("web2", 5, 60.0)]
        status, none = await ops.call("GET", f"/api/analytics/jobs/J{datetime.now(UTC).year}9999/metrics")
        assert status == 404

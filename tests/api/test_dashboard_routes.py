"""The two routes the reference web UI's dashboard calls beyond the document, over the real engine
and a real SQLite file: `/api/executions/statistics` and `/api/executions/active`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from api_compat.monitor import schemas as s
from api_compat.monitor.statistics import StatisticsOut, duration_text
from engine.events import ExecutionCreated, ExecutionStarted
from engine.model import Execution
from tests.api.helpers import check_fail, check_ok, finish

pytestmark = [pytest.mark.timeout(60)]


async def create(api: Any, command: str, name: str = "t") -> str:
    status, body = await api("POST", "/api/executions", json={"name": name, "command": command})
    return check_ok(status, body, s.ExecutionCreated, expect=201)["execution_id"]


async def started_and_stored(engine: Any, events: Any, execution_id: str) -> None:
    async with asyncio.timeout(10):
        async for event in events:
            if isinstance(event, ExecutionStarted) and event.execution_id == execution_id:
                break
    await engine.writer.barrier()  # the store holds the start


async def queued(engine: Any) -> str:
    """A pending execution as another process sharing the file (the CLI) leaves it before it starts:
    this engine runs what it creates at once, so its own never stay pending long enough to see."""
    execution = Execution(id="queued-elsewhere", name="queued", command="true")
    await engine.store.apply([ExecutionCreated(execution)])
    return execution.id


async def test_statistics_after_a_completed_a_failed_and_a_running_execution(
    api: Any, engine: Any, tmp_path: Path,
) -> None:
    ok_id = await create(api, "sleep 0.2", name="ok")
    bad_id = await create(api, "sleep 0.2; exit 3", name="bad")
    assert (await finish(engine, ok_id)).status == "completed"
    assert (await finish(engine, bad_id)).status == "failed"
    gate = tmp_path / "go"
    events = engine.subscribe()
    run_id = await create(api, f"until test -e {gate}; do sleep 0.02; done", name="running")
    await started_and_stored(engine, events, run_id)
    events.close()

    data = check_ok(*await api("GET", "/api/executions/statistics"), StatisticsOut)
    stats = data["statistics"]
    # what the dashboard's cards read
    assert stats["total_executions"] == 3
    assert stats["active_now"] == 1
    assert stats["success_rate"] == "50.0%"
    assert stats["avg_duration"].endswith("s") and stats["avg_duration"] != "-"
    # and the same as numbers
    assert stats["success_rate_percent"] == 50.0
    assert 0.15 < stats["avg_duration_seconds"] < 10
    assert stats["by_status"] == {"pending": 0, "running": 1, "completed": 1, "failed": 1, "cancelled": 0}

    gate.touch()
    await finish(engine, run_id)
    stats = check_ok(*await api("GET", "/api/executions/statistics"), StatisticsOut)["statistics"]
    assert stats["active_now"] == 0 and stats["success_rate"] == "66.7%"


async def test_statistics_of_an_empty_store(api: Any) -> None:
    stats = check_ok(*await api("GET", "/api/executions/statistics"), StatisticsOut)["statistics"]
    assert stats["total_executions"] == 0 and stats["active_now"] == 0
    assert stats["success_rate"] == "0.0%" and stats["avg_duration"] == "-"
    assert stats["success_rate_percent"] is None and stats["avg_duration_seconds"] is None


async def test_active_lists_pending_and_running_only(api: Any, engine: Any, tmp_path: Path) -> None:
    done_id = await create(api, "true", name="done")
    await finish(engine, done_id)
    gate = tmp_path / "go"
    events = engine.subscribe()
    run_id = await create(api, f"until test -e {gate}; do sleep 0.02; done", name="running")
    await started_and_stored(engine, events, run_id)
    events.close()
    pending_id = await queued(engine)

    data = check_ok(*await api("GET", "/api/executions/active"), s.ExecutionList)
    # in the list format of GET /api/executions, newest first
    assert [(e["id"], e["status"]) for e in data["executions"]] == [(pending_id, "pending"), (run_id, "running")]
    assert data["total_count"] == 2 and data["has_more"] is False
    assert {"progress_percentage", "completed_steps", "total_steps", "command", "name"} <= set(data["executions"][0])

    gate.touch()
    await finish(engine, run_id)
    data = check_ok(*await api("GET", "/api/executions/active"), s.ExecutionList)
    assert [e["id"] for e in data["executions"]] == [pending_id]


async def test_the_route_names_are_not_taken_for_execution_ids(api: Any, engine: Any) -> None:
    # before these routes both answered 404 "execution statistics not found"
    check_ok(*await api("GET", "/api/executions/statistics"), StatisticsOut)
    check_ok(*await api("GET", "/api/executions/active"), s.ExecutionList)
    # an execution's own routes are still its own
    assert "not found" in check_fail(*await api("GET", "/api/executions/statistical"), 404)
    ex_id = await create(api, "true")
    await finish(engine, ex_id)
    detail = check_ok(*await api("GET", f"/api/executions/{ex_id}"), s.ExecutionDetail)
    assert detail["execution"]["id"] == ex_id


def test_durations_read_as_the_dashboard_writes_them() -> None:
    assert [duration_text(x) for x in (None, 0, 2.54, 184, 3720)] == ["-", "-", "2.5s", "3m 4s", "1h 2m"]


async def test_both_routes_are_documented_with_their_answers(api: Any) -> None:
    status, doc = await api("GET", "/api/openapi.json")
    assert status == 200
    for path, model in (("/api/executions/statistics", "StatisticsOut"), ("/api/executions/active", "ExecutionList")):
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert model in json.dumps(schema) or model in json.dumps(doc["components"]["schemas"][schema["$ref"].split("/")[-1]])

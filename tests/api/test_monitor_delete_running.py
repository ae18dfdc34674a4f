"""Issue 12 item 6: DELETE of a running execution answers 200 as the document does; it is cancelled,
its processes are ended, then it is deleted, and the message says so."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from api_compat.monitor import schemas as s
from engine.events import LinesLogged
from tests.api.helpers import check_fail, check_ok

pytestmark = pytest.mark.timeout(60)


async def _first_line(sub: Any, execution_id: str) -> str:
    async for event in sub:
        if isinstance(event, LinesLogged) and event.exec_id == execution_id:
            return event.lines[0]
    raise AssertionError("no line")


async def test_delete_of_a_running_execution_cancels_and_deletes_it(api: Any, engine: Any) -> None:
    sub = engine.subscribe()
    status, body = await api("POST", "/api/executions", json={"name": "long", "command": "echo $$; exec sleep 60"})
    ex_id = check_ok(status, body, s.ExecutionCreated, expect=201)["execution_id"]
    pid = int(await asyncio.wait_for(_first_line(sub, ex_id), 20))
    sub.close()

    data = check_ok(*await api("DELETE", f"/api/executions/{ex_id}"), s.Message)

    assert data["message"] == "Execution cancelled and deleted"
    assert data["execution_id"] == ex_id
    check_fail(*await api("GET", f"/api/executions/{ex_id}"), 404)
    with pytest.raises(ProcessLookupError):  # its process ended before the answer
        os.kill(pid, 0)
    listed = check_ok(*await api("GET", "/api/executions"), s.ExecutionList)
    assert ex_id not in {e["id"] for e in listed["executions"]}


async def test_health_status_reports_no_made_up_cache_hit_ratio(api: Any) -> None:
    """Issue 12 item 7: the figure was always null; SQLite gives Python none (docs/api.md)."""
    data = check_ok(*await api("GET", "/api/health/status"), s.HealthStatus)
    assert data["database"]["status"] == "connected"
    assert "cache_hit_ratio" not in data["database"]

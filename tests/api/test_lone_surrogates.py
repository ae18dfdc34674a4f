"""JSON may spell lone surrogates ("\\ud800"), which UTF-8 cannot store (issue 9, item 3): accepted
where they are only shown (free-form metadata: stored with U+FFFD), refused with 400 where a process would get
them (the command); never a 201 for an execution then lost."""

from __future__ import annotations

from typing import Any

import pytest

from engine.model import ExecutionFilter

pytestmark = [pytest.mark.timeout(60)]


async def test_a_lone_surrogate_in_metadata_is_stored_replaced(api: Any, engine: Any) -> None:
    # aiohttp's json= escapes it as JSON does: the server reads a lone surrogate back; metadata is
    # free-form, so no schema refuses it
    status, body = await api("POST", "/api/executions", json={
        "name": "meta", "command": "echo fine", "metadata": {"note": "bad \ud800 text"}})
    assert status == 201, body
    ex_id = body["data"]["execution_id"]
    final = await engine.wait(ex_id)
    assert final.status.value == "completed"
    stored = await engine.store.get_execution(ex_id)
    assert stored is not None and stored.metadata["note"] == "bad \ufffd text"
    status, shown = await api("GET", f"/api/executions/{ex_id}")
    assert status == 200
    assert "bad \ufffd text" in str(shown)


async def test_a_lone_surrogate_in_a_command_is_refused(api: Any, engine: Any) -> None:
    status, body = await api("POST", "/api/executions", json={"name": "x", "command": "echo \ud800"})
    assert status == 400, body  # the surface's schema refuses it, or the engine
    assert body["success"] is False
    _page, total = await engine.list_executions(ExecutionFilter())
    assert total == 0

"""`R` (rerun from the failed step) on an execution with nothing left to run: a notification, and
no new execution."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from engine.model import ExecutionFilter
from stepflow_tui.screens.execution import ExecutionScreen
from tests.engine_helpers import finished, submit_workflow
from tests.test_rerun_nothing_left import WORKFLOW
from tests.tui.conftest import make_app, wait_for


async def test_R_with_every_step_completed_notifies_and_creates_nothing(engine, tmp_path: Path) -> None:
    done = await finished(engine, await submit_workflow(engine, text=WORKFLOW))
    # failed after its last step completed (an engine lost then): the screen's own check lets it by
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "stepflow.db")) as conn, conn:
        conn.execute("UPDATE executions SET status = 'failed' WHERE id = ?", (done.id,))
    failed = await engine.get_execution(done.id)
    assert failed is not None
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        app.open_execution(failed)
        await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen), what="execution view")
        await pilot.press("R")
        await wait_for(pilot, lambda: any("nothing to rerun" in n.message for n in app._notifications),
                       what="the notification")
        assert isinstance(app.screen, ExecutionScreen) and app.screen.execution.id == done.id
    _, total = await engine.list_executions(ExecutionFilter())
    assert total == 1

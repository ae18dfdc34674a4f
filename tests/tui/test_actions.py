"""Pilot tests of the commands, against the real engine on a real SQLite file and real processes."""

from __future__ import annotations

from pathlib import Path

from engine.model import ExecutionFilter, ExecutionStatus
from stepflow_tui.bridge import EngineBridge
from stepflow_tui.screens.dialogs import ConfirmDialog
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.screens.launch import LaunchDialog
from stepflow_tui.widgets.execution_list import ExecutionList
from stepflow_tui.widgets.log_view import LogView
from tests.tui.conftest import SAMPLES, make_app, wait_for
from tests.tui.pilot_steps import answer_no, launch_command, quit_and_answer_yes, quit_while_running
from tests.tui.screen_text import screen_text


def status_of(app) -> ExecutionStatus:
    return app.screen.execution.status


async def test_launch_a_sample_workflow_and_follow_it(engine):
    app = make_app(engine)
    messages = []
    async with app.run_test(size=(100, 30), message_hook=messages.append) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchDialog) and app.screen.workflows)
        index = [p.name for p in app.screen.workflows].index("build-and-test.yaml")
        for _ in range(index):
            await pilot.press("down")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen), what="execution view")
        await wait_for(pilot, lambda: status_of(app) is ExecutionStatus.COMPLETED, limit=30, what="completed")
        await wait_for(pilot, lambda: "packaged" in screen_text(app), what="last line followed")
        text = screen_text(app)
        for step in ("setup", "lint", "unit-tests", "package", "create-venv"):
            assert step in text
        # events were coalesced: far fewer bridge messages than events
        assert any(isinstance(m, EngineBridge.Changed) for m in messages)


async def test_launch_a_command_then_rerun_it(engine):
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await launch_command(pilot, "echo hello from tui")
        first = screen.execution.id
        await wait_for(pilot, lambda: status_of(app) is ExecutionStatus.COMPLETED, what="completed")
        await wait_for(pilot, lambda: "hello from tui" in screen_text(app), what="output")
        await pilot.press("r")
        await wait_for(pilot, lambda: app.screen.execution.id != first, what="rerun opened")
        assert app.screen.execution.rerun_of == first
        await wait_for(pilot, lambda: status_of(app) is ExecutionStatus.COMPLETED, what="rerun completed")


async def test_invalid_workflow_is_a_notification_not_a_traceback(engine, tmp_path: Path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\nsteps:\n  - name: a\n    runn: echo\n")
    app = make_app(engine, workflow_dirs=[tmp_path])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, LaunchDialog) and app.screen.workflows)
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(n.severity == "error" for n in app._notifications), what="error")
        note = next(n for n in app._notifications if n.severity == "error")
        assert "broken.yaml" in note.message
        assert not isinstance(app.screen, ExecutionScreen)
        assert app.is_running


async def test_cancel_asks_first_then_cancels(engine):
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await launch_command(pilot, "echo started; sleep 30")
        await wait_for(pilot, lambda: status_of(app) is ExecutionStatus.RUNNING, what="running")
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")  # no: nothing happens
        assert isinstance(app.screen, ExecutionScreen)
        assert status_of(app) is ExecutionStatus.RUNNING
        await pilot.press("c")
        await pilot.press("y")
        await wait_for(pilot, lambda: status_of(app) is ExecutionStatus.CANCELLED, what="cancelled")


async def test_rerun_from_failed_step(engine):
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await launch_command(pilot, "echo STEP_START:ok; echo STEP_START:bad; exit 3")
        await wait_for(pilot, lambda: status_of(app) is ExecutionStatus.FAILED, what="failed")
        first = app.screen.execution.id
        await pilot.press("R")
        await wait_for(pilot, lambda: app.screen.execution.id != first, what="rerun opened")
        assert app.screen.execution.rerun_of == first


async def test_delete_asks_first_and_refuses_running(engine):
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await launch_command(pilot, "sleep 30")
        await wait_for(pilot, lambda: status_of(app) is ExecutionStatus.RUNNING, what="running")
        # not offered while it runs (the footer shows what can be done now): d does nothing
        assert "d Delete" not in screen_text(app).splitlines()[-1]
        await pilot.press("d")
        assert not isinstance(app.screen, ConfirmDialog)
        await engine.cancel(app.screen.execution.id)
        await wait_for(pilot, lambda: status_of(app).is_terminal, what="stopped")
        await pilot.press("escape")
        lst = app.screen.query_one(ExecutionList)
        await wait_for(pilot, lambda: lst.total == 1 and lst.current is not None and lst.current.status.is_terminal)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: lst.total == 0, what="deleted")
        _rows, total = await engine.list_executions(ExecutionFilter())
        assert total == 0


async def test_quit_with_running_execution_asks_and_says_what_happens(engine):
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await quit_while_running(pilot, "escape", "q")
        assert "cancelled (reason: shutdown)" in screen_text(app)
        await answer_no(pilot)
        await quit_and_answer_yes(pilot, "q")


async def test_live_follow_of_a_fast_command(engine):
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await launch_command(pilot, "seq 1 50000")
        log = screen.query_one(LogView)
        await wait_for(pilot, lambda: status_of(app).is_terminal, limit=30, what="finished")
        await wait_for(pilot, lambda: log.total == 50000, limit=10, what="all lines counted")
        await wait_for(pilot, lambda: "50000" in screen_text(app), what="tail shown")
        assert log.window.loaded_lines <= log.window.block * log.window.max_blocks


def test_samples_exist():
    assert (SAMPLES / "build-and-test.yaml").exists()


async def test_an_artifact_made_while_watching_shows_in_the_artifacts_tab(engine, tmp_path, monkeypatch):
    """The view was open before the artifact existed: the tab lists it without reopening."""
    monkeypatch.chdir(tmp_path)  # a typed command runs in the current directory
    app = make_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        await launch_command(pilot, "echo report > r.txt; echo ARTIFACT:r.txt:the-report; echo done")
        await wait_for(pilot, lambda: status_of(app) is ExecutionStatus.COMPLETED, what="completed")
        await pilot.press("a")
        await wait_for(pilot, lambda: "the-report" in screen_text(app), what="artifact listed")
        assert "No artifacts." not in screen_text(app)

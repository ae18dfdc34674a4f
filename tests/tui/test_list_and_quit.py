"""The list shows each execution's short id (and the date of one not started today); ctrl+c quits
as q does, asking first only where work would be lost; the footer offers only what can be done to
the execution at hand (no Cancel for a finished one, no Delete for a running one)."""

from __future__ import annotations

from datetime import timedelta

from engine.model import ExecutionStatus
from stepflow_tui.screens.dialogs import ConfirmDialog
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.screens.executions import ExecutionsScreen
from stepflow_tui.widgets.execution_list import ExecutionList
from tests.tui.conftest import fixed_clock, make_app, wait_for
from tests.tui.pilot_steps import answer_no, launch_command, quit_and_answer_yes, quit_while_running
from tests.tui.screen_text import screen_text
from tests.tui.seed import NOW, _id, build_events


def footer(app) -> str:
    return screen_text(app).splitlines()[-1]


def row(app, name: str) -> str:
    return next(line for line in screen_text(app).splitlines() if name in line)


async def test_the_list_shows_short_ids_and_the_date_of_other_days(seeded_client):
    app = make_app(seeded_client, clock=lambda: NOW + timedelta(days=1))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExecutionList).loaded, what="list")
        await wait_for(pilot, lambda: "nightly-backup" in screen_text(app), what="rows")
        line = row(app, "nightly-backup")
        assert _id(1)[:8] in line
        assert "03-14 09:00" in line
    today = make_app(seeded_client, clock=fixed_clock)
    async with today.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "nightly-backup" in screen_text(today), what="rows")
        line = row(today, "nightly-backup")
        assert "09:00:00" in line and "03-14" not in line


async def test_a_tick_or_events_before_the_list_is_there_do_not_stop_the_app(seeded_client):
    """The app's 1 s timer ticks the screen on top, and the engine's events go to every screen; on
    a loaded machine either can come before the list screen is composed: the app crashed on it
    (NoMatches) instead of showing the rows."""
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExecutionList).loaded, what="list")
        screen = ExecutionsScreen()
        app.push_screen(screen)  # as at start: on top at once, composed a moment later
        app._tick()  # the timer's tick, before that moment
        screen.apply_events(build_events()[:3])  # an execution created, started and finished
        await wait_for(pilot, lambda: "nightly-backup" in screen_text(app), what="rows")


async def test_ctrl_c_quits_at_once_when_nothing_runs_here(seeded_client):
    """The seeded store has a running execution of another process: quitting loses nothing."""
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.running, what="the running execution counted")
        assert "1 running" in screen_text(app)
        await pilot.press("ctrl+c")
        await pilot.pause(0.1)
        assert app._exit


async def test_ctrl_c_asks_while_an_execution_launched_here_runs(engine):
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await quit_while_running(pilot, "ctrl+c")
        assert "Quitting stops the engine" in screen_text(app)
        await answer_no(pilot)
        assert isinstance(app.screen, ExecutionScreen)
        await quit_and_answer_yes(pilot, "ctrl+c")


async def test_the_footer_offers_cancel_only_while_it_runs(engine):
    app = make_app(engine)
    async with app.run_test(size=(120, 24)) as pilot:
        screen = await launch_command(pilot, "sleep 30")
        await wait_for(pilot, lambda: screen.execution.status is ExecutionStatus.RUNNING, what="running")
        await wait_for(pilot, lambda: "Cancel" in footer(app), what="Cancel offered")
        assert "Delete" not in footer(app)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.execution.status is ExecutionStatus.CANCELLED, what="cancelled")
        await wait_for(pilot, lambda: "Cancel" not in footer(app), what="Cancel gone")
        assert "Delete" in footer(app) and "Rerun" in footer(app)
        await pilot.press("c")  # nothing to cancel: no question
        await pilot.pause(0.1)
        assert app.screen is screen
        # the same in the list, for the execution under the cursor
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen.query_one(ExecutionList).current is not None, what="list")
        await wait_for(pilot, lambda: "Delete" in footer(app), what="list footer")
        assert "Cancel" not in footer(app)

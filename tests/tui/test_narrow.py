"""Narrow terminals: `z` gives the focused pane the whole screen (escape or `z` again restores), the
footer keeps quit and help whole however narrow, and `?` lists the zoom key and ctrl+c."""

from __future__ import annotations

from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.widgets.log_view import LogView
from stepflow_tui.widgets.step_tree import StepTree
from tests.tui.conftest import fixed_clock, make_app, wait_for
from tests.tui.pilot_steps import open_selected
from tests.tui.screen_text import screen_text
from tests.tui.test_keys_help import read_help, row_of


async def open_running(pilot) -> ExecutionScreen:
    screen = await open_selected(pilot)
    await wait_for(pilot, lambda: "installing dependencies" in screen_text(pilot.app), what="the log")
    return screen


async def test_z_zooms_the_focused_pane_and_restores(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_running(pilot)
        await pilot.press("T", "z")
        assert screen.maximized is screen.query_one(StepTree)
        await pilot.pause()
        text = screen_text(app)
        assert "installing dependencies" not in text
        assert "✗ lint 3.0s — 3 style errors" in text  # cut at 80 columns beside the log
        await pilot.press("escape")
        assert screen.maximized is None and isinstance(app.screen, ExecutionScreen)
        await pilot.press("l", "z")
        assert screen.maximized is screen.query_one(LogView)
        await pilot.press("z")
        assert screen.maximized is None


async def test_the_footer_keeps_quit_and_help_at_60_columns(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(60, 24)) as pilot:
        await open_running(pilot)
        await pilot.pause(0.2)
        bottom = screen_text(app).splitlines()[-1]
        assert "q Quit" in bottom and "? Keys" in bottom, bottom
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_running(pilot)
        await pilot.press("question_mark")
        text = await read_help(pilot)
        assert row_of(text, "execution.zoom").startswith("z ")
        assert any("^c" in line and "app.interrupt" in line for line in text.splitlines())

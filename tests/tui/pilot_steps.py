"""Steps many pilot tests take on the way to what they check: open the selected execution, launch a
command, ask to quit while it runs, and answer."""

from __future__ import annotations

from stepflow_tui.screens.dialogs import ConfirmDialog
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.screens.launch import LaunchDialog
from stepflow_tui.widgets.execution_list import ExecutionList
from tests.tui.conftest import wait_for


async def open_selected(pilot) -> ExecutionScreen:
    """Wait for the list, open the execution it selects (the newest), and wait for its view."""
    app = pilot.app
    await wait_for(pilot, lambda: app.screen.query_one(ExecutionList).loaded, what="list")
    await pilot.press("enter")
    return await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen, what="view")


async def launch_command(pilot, command: str) -> ExecutionScreen:
    """Launch `command` from the launch dialog; its execution view."""
    app = pilot.app
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, LaunchDialog), what="launch dialog")
    app.screen.query_one("#command-input").focus()
    await pilot.press(*command, "enter")
    await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen), what="execution view")
    return app.screen


async def quit_while_running(pilot, *keys: str) -> ConfirmDialog:
    """Launch a long command, press `keys` to quit while it runs: the question asked."""
    app = pilot.app
    await launch_command(pilot, "sleep 30")
    await wait_for(pilot, lambda: app.running_here, what="the running execution counted")
    await pilot.press(*keys)
    return await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog) and app.screen, what="the question")


async def answer_no(pilot) -> None:
    """No to the question to quit: the app goes on."""
    await pilot.press("n")
    assert pilot.app.is_running and not pilot.app._exit


async def quit_and_answer_yes(pilot, *keys: str) -> None:
    """Press `keys` to quit and yes to the question: the app exits."""
    await pilot.press(*keys, "y")
    await pilot.pause(0.1)
    assert pilot.app._exit

"""`?` lists every binding of the app, grouped by where it applies (every screen, the focused widgets,
the dialogs), with the keys in effect after the user's remaps and the id to remap each one; and
Textual's ctrl+q asks before quitting as `q` does."""

from __future__ import annotations

from pathlib import Path

from stepflow_tui.screens.dialogs import ConfirmDialog, HelpScreen
from stepflow_tui.widgets.execution_list import ExecutionList
from tests.tui.conftest import fixed_clock, make_app, wait_for
from tests.tui.pilot_steps import answer_no, open_selected, quit_while_running
from tests.tui.screen_text import screen_text

GROUPS = [
    "Everywhere",
    "Executions list",
    "Execution view",
    "Step tree (execution view)",
    "Log pane (execution view)",
    "Artifacts (execution view)",
    "Launch dialog",
    "Confirmations and prompts",
    "This help",
    "Built in",
]


async def read_help(pilot) -> str:
    """Everything the help shows, paging down until the end (it scrolls at 80x24)."""
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
    seen: list[str] = []
    scroll = app.screen.query_one("#help-scroll")
    while True:
        await pilot.pause()
        seen.append(screen_text(app))
        if scroll.scroll_y >= scroll.max_scroll_y:
            return "\n".join(seen)
        await pilot.press("pagedown")


def row_of(text: str, binding_id: str) -> str:
    """The help's row for a binding id, inside the dialog's border."""
    line = next(line for line in text.splitlines() if f" {binding_id} " in line)
    return line.split("│")[1].strip()


async def test_help_lists_every_screen_and_widget_with_ids(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExecutionList).loaded, what="list")
        await pilot.press("question_mark")
        text = await read_help(pilot)
        for title in GROUPS:
            assert title in text, title
        assert "Executions list  (here)" in text and "Execution view  (here)" not in text
        for binding_id, key, action in [
            ("app.launch", "n", "Launch"),
            ("executions.filter", "/", "Filter"),
            ("list.open", "⏎", "Open"),
            ("execution.cancel", "c", "Cancel"),
            ("execution.rerun_failed", "R", "Rerun failed"),
            ("tree.select", "⏎", "Filter log"),
            ("log.follow", "f", "Follow"),
            ("log.markers", "m", "Show markers"),
            ("log.hide_markers", "m", "Hide markers"),
            ("log.previous_match", "N", "Previous"),
            ("artifacts.save", "s", "Save copy"),
            ("launch.target", "^t", "Target"),
            ("confirm.yes", "y", "Yes"),
            ("prompt.cancel", "esc", "Cancel"),
        ]:
            row = row_of(text, binding_id)
            assert row.startswith(key) and action in row, row
        assert "ctrl+p" in text and "Command palette" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_help_in_the_execution_view_marks_its_groups(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_selected(pilot)
        await pilot.press("question_mark")
        text = await read_help(pilot)
        for title in ("Execution view", "Step tree (execution view)", "Log pane (execution view)"):
            assert f"{title}  (here)" in text
        assert "Executions list  (here)" not in text and "Launch dialog  (here)" not in text


async def test_help_shows_the_keys_a_keymap_file_gives(seeded_client, tmp_path: Path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys]\n"log.follow" = "F"\n"execution.cancel" = "x,ctrl+k"\n')
    app = make_app(seeded_client, clock=fixed_clock, keys_path=keys)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExecutionList).loaded, what="list")
        await pilot.press("question_mark")
        text = await read_help(pilot)
        assert row_of(text, "log.follow").startswith("F ")
        assert row_of(text, "execution.cancel").startswith("x ^k ")
        # the remapped binding keeps its place among its screen's (cancel comes before rerun)
        listing = [line.split("│")[1].strip() for line in text.splitlines() if " execution." in line]
        assert listing.index(row_of(text, "execution.cancel")) < listing.index(
            row_of(text, "execution.rerun")
        )


async def test_ctrl_q_asks_first_while_an_execution_runs(engine):
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        await quit_while_running(pilot, "ctrl+q")
        assert "Quitting stops the engine" in screen_text(app)
        await pilot.press("ctrl+q")  # a second one does not stack another question
        assert sum(isinstance(s, ConfirmDialog) for s in app.screen_stack) == 1
        await answer_no(pilot)

"""The launch dialog: typing filters the workflow files, a typed path runs that file, and only a
file that ran is remembered as recent (one that failed validation is not)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual import events
from textual.widgets import Input

from engine.model import ExecutionStatus
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.screens.executions import ExecutionsScreen
from stepflow_tui.screens.launch import LaunchDialog, read_recent
from tests.tui.conftest import SAMPLES, make_app, wait_for
from tests.tui.screen_text import screen_text


async def open_dialog(pilot) -> LaunchDialog:
    app = pilot.app
    await pilot.press("n")
    return await wait_for(pilot, lambda: isinstance(app.screen, LaunchDialog) and app.screen.workflows
                          and app.screen, what="the launch dialog with files")


async def test_typing_filters_the_files_and_enter_runs_the_match(engine):
    app = make_app(engine, workflow_dirs=[SAMPLES])
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot)
        assert len(dialog.workflows) > 3
        await pilot.press(*"ARTIF")
        await wait_for(pilot, lambda: [p.name for p in dialog.workflows] == ["artifacts.yaml"], what="one match")
        text = screen_text(app)
        assert "artifacts.yaml" in text and "build-and-test.yaml" not in text
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen,
                                what="the execution")
        assert screen.execution.name == "artifacts"


async def test_words_in_any_order_and_arrows_move_in_the_filtered_list(engine):
    app = make_app(engine, workflow_dirs=[SAMPLES])
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot)
        await pilot.press(*"yaml s")  # every name has yaml; s: several
        await wait_for(pilot, lambda: 1 < len(dialog.workflows) < 10, what="several matches")
        second = dialog.workflows[1]
        await pilot.press("down", "enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen,
                                what="the execution")
        assert screen.execution.command.endswith(second.name) or second.stem in screen.execution.name


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A new folder with a short absolute path (/tmp/sf…): typed key by key, each key a re-filter
    and a redraw, pytest's tmp_path (some 90 characters) took seconds."""
    folder = Path(tempfile.mkdtemp(prefix="sf", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_a_typed_path_runs_that_file(engine, short_dir: Path):
    elsewhere = short_dir / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.yml").write_text("name: typed-one\nsteps:\n  - name: hi\n    run: echo typed path ran\n")
    app = make_app(engine, workflow_dirs=[SAMPLES])
    async with app.run_test(size=(100, 30)) as pilot:
        dialog = await open_dialog(pilot)
        await pilot.press(*str(elsewhere / "mine.yml"))
        await wait_for(pilot, lambda: [p.name for p in dialog.workflows] == ["mine.yml"], what="the typed file")
        assert "typed path" in screen_text(app)
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen,
                                what="the execution")
        await wait_for(pilot, lambda: screen.execution.status is ExecutionStatus.COMPLETED, what="completed")
        assert screen.execution.name == "typed-one"
        await wait_for(pilot, lambda: "typed path ran" in screen_text(app), what="its output")


async def test_enter_typed_right_after_a_path_runs_that_file(engine, short_dir: Path):
    """The typed path is checked off the event loop; an enter that comes before the check is answered
    once the check is done, with that file."""
    (short_dir / "quick.yml").write_text("name: typed-quick\nsteps:\n  - name: hi\n    run: echo quick ran\n")
    app = make_app(engine, workflow_dirs=[SAMPLES])
    async with app.run_test(size=(100, 30)) as pilot:
        await open_dialog(pilot)
        await pilot.press(*str(short_dir / "quick.yml"), "enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen,
                                what="the execution")
        assert screen.execution.name == "typed-quick"


async def test_a_file_that_fails_validation_is_not_remembered_as_recent(engine, tmp_path: Path):
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "a-broken.yaml").write_text("name: broken\nsteps:\n  - name: a\n    runn: echo\n")
    (folder / "b-good.yaml").write_text("name: good\nsteps:\n  - name: a\n    run: echo fine\n")
    app = make_app(engine, workflow_dirs=[folder])
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot)
        assert [p.name for p in dialog.workflows] == ["a-broken.yaml", "b-good.yaml"]
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(n.severity == "error" for n in app._notifications), what="the error")
        assert read_recent() == []
        dialog = await open_dialog(pilot)
        assert "recent" not in screen_text(app)
        await pilot.press("down", "enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen,
                                what="the good one ran")
        await wait_for(pilot, lambda: screen.execution.status is ExecutionStatus.COMPLETED, what="completed")
        assert [p.name for p in read_recent()] == ["b-good.yaml"]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ExecutionsScreen), what="the list")
        dialog = await open_dialog(pilot)
        assert dialog.found[0].source == "recent" and dialog.found[0].path.name == "b-good.yaml"


async def test_keys_typed_on_the_list_filter_rather_than_act(engine):
    """q and n are the app's keys elsewhere: in the dialog they are letters of the filter."""
    app = make_app(engine, workflow_dirs=[SAMPLES])
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot)
        await pilot.press("q", "n")
        assert app.screen is dialog and not app._exit
        assert dialog.query_one("#workflow-filter").value == "qn"
        await wait_for(pilot, lambda: "no workflow file matches" in screen_text(app), what="nothing matches")


def type_ahead(app, keys: str | list[str]) -> None:
    """Keys as a terminal delivers them when they come faster than the app reads them (a fast
    typist, a loaded machine): all queued at once, none waiting for the one before."""
    for key in keys:
        character = {"tab": "\t", "space": " "}.get(key, key)
        app.post_message(events.Key(key, character))


async def test_a_tab_typed_ahead_of_a_command_still_moves_to_the_command_field(engine):
    app = make_app(engine, workflow_dirs=[SAMPLES])
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot)
        type_ahead(app, ["tab", *("space" if c == " " else c for c in "sleep 30")])
        command = dialog.query_one("#command-input", Input)
        await wait_for(pilot, lambda: command.value == "sleep 30", what="the command typed")
        assert dialog.query_one("#workflow-filter", Input).value == ""
        assert dialog.focused is command


async def test_words_typed_ahead_on_the_list_reach_the_filter_whole(engine):
    app = make_app(engine, workflow_dirs=[SAMPLES])
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot)
        type_ahead(app, ["space", *("space" if c == " " else c for c in "test build")])
        await wait_for(pilot, lambda: [p.name for p in dialog.workflows] == ["build-and-test.yaml"],
                       what="one match")
        assert dialog.query_one("#workflow-filter", Input).value == "test build"

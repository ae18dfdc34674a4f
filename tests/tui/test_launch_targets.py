"""The launch dialog's target picker: `local` plus the targets of the user's targets file, read when
the dialog opens; the choice goes to the engine (a command's target, a workflow's runs_on override).

The engine is real (a real SQLite file, real processes); its runner factory runs every target's
commands locally, so a target named in the targets file is enough to see it listed, passed and
recorded, with no SSH server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api_compat.monitor.client import RemoteEngine
from engine.engine import Engine, EngineConfig
from engine.model import ExecutionStatus
from engine.runners.local import LocalRunner
from engine.targets_file import load_user_targets
from stepflow_tui.launch import connected_app
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.screens.launch import LaunchDialog
from storage import SqliteStore
from storage.paths import database_path
from tests.tui.conftest import make_app, wait_for
from tests.tui.screen_text import screen_text

TARGETS = "web1: {type: ssh, host: 10.0.0.5, user: deploy}\nbox: {type: docker, image: 'python:3.12-slim'}\n"
WORKFLOW = "name: greet\nruns_on: [local]\nsteps:\n  - name: hello\n    run: echo hello from the workflow\n"


@pytest.fixture
def targets_file(tmp_path: Path) -> Path:
    # conftest points XDG_CONFIG_HOME at tmp_path/config: this is the user's targets file
    path = tmp_path / "config" / "stepflow" / "targets.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(TARGETS)
    return path


@pytest.fixture
async def engine(tmp_path: Path, targets_file: Path) -> AsyncIterator[Engine]:
    data_dir = tmp_path / "data"
    config = EngineConfig(targets=load_user_targets(targets_file), kill_grace=1.0, shutdown_grace=5)
    eng = Engine(
        SqliteStore(database_path(data_dir)),
        data_dir,
        config,
        runner_factory=lambda _target, _config: LocalRunner(),
    )
    await eng.start()
    try:
        yield eng
    finally:
        await eng.shutdown()


async def open_launch(pilot) -> LaunchDialog:
    await pilot.press("n")
    return await wait_for(
        pilot, lambda: isinstance(pilot.app.screen, LaunchDialog) and pilot.app.screen, what="launch dialog"
    )


async def pick_target(pilot, name: str) -> None:
    """ctrl+t opens the picker; arrows to `name`; enter picks it."""
    dialog = pilot.app.screen
    await wait_for(pilot, lambda: name in dialog.offered, what=f"{name} offered")
    await pilot.press("ctrl+t")
    await wait_for(pilot, lambda: name in screen_text(pilot.app), what="the picker open")
    for _ in range(10):
        if (
            dialog.query_one("#target-select").query_one("SelectOverlay").highlighted_option.prompt.plain
            == name
        ):
            break
        await pilot.press("down")
    await pilot.press("enter")
    await wait_for(pilot, lambda: dialog.target == name, what=f"{name} picked")


async def test_the_picker_lists_local_and_the_targets_file_and_a_command_runs_on_the_chosen_one(engine):
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_launch(pilot)
        assert "on default (local · runs_on)" in screen_text(app)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: "web1" in screen_text(app), what="the targets listed")
        text = screen_text(app)
        assert "local" in text and "box" in text
        await pilot.press("escape")  # closes the menu, not the dialog
        assert isinstance(app.screen, LaunchDialog)
        await pick_target(pilot, "web1")
        # the focus went back to where ctrl+t was pressed: tab goes on to the command box
        await wait_for(pilot, lambda: app.focused is dialog.query_one("#workflow-list"), what="focus back")
        await pilot.press("tab")
        assert app.focused is dialog.query_one("#command-input")
        await pilot.press(*"echo on web1", "enter")
        screen = await wait_for(
            pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen, what="execution view"
        )
        await wait_for(pilot, lambda: screen.execution.status is ExecutionStatus.COMPLETED, what="completed")
        await wait_for(
            pilot,
            lambda: "web1" in screen_text(app) and "echo on web1" in screen_text(app),
            what="the branch and the output",
        )
        assert screen.execution.targets == ["web1"]
        assert [s.name for s in await engine.get_steps(screen.execution.id)] == ["web1"]


async def test_a_workflow_keeps_its_runs_on_unless_a_target_is_picked(engine, tmp_path: Path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "greet.yaml").write_text(WORKFLOW)
    app = make_app(engine, workflow_dirs=[flows])
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_launch(pilot)
        await wait_for(pilot, lambda: dialog.workflows, what="the workflow listed")
        await pilot.press("enter")
        first = await wait_for(
            pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen, what="first execution"
        )
        assert first.execution.targets == ["local"]
        await wait_for(pilot, lambda: first.execution.status is ExecutionStatus.COMPLETED, what="completed")

        dialog = await open_launch(pilot)
        await wait_for(pilot, lambda: dialog.workflows, what="the workflow listed")
        await pick_target(pilot, "box")
        await pilot.press("enter")
        second = await wait_for(
            pilot,
            lambda: isinstance(app.screen, ExecutionScreen) and app.screen is not first and app.screen,
            what="second execution",
        )
        assert second.execution.targets == ["box"]
        await wait_for(pilot, lambda: second.execution.status is ExecutionStatus.COMPLETED, what="completed")
        assert "hello from the workflow" in screen_text(app)


async def test_a_bad_targets_file_is_a_notification_and_local_still_works(engine, targets_file: Path):
    targets_file.write_text("web1: {type: ssh}\n")  # no host
    app = make_app(engine)
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_launch(pilot)
        await wait_for(
            pilot,
            lambda: any(n.title == "Targets file not read" for n in app._notifications),
            what="the notification",
        )
        note = next(n for n in app._notifications if n.title == "Targets file not read")
        assert "host" in note.message and str(targets_file) in note.message
        await pick_target(pilot, "local")
        dialog.query_one("#command-input").focus()
        await pilot.press(*"echo fine", "enter")
        screen = await wait_for(
            pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen, what="execution view"
        )
        assert screen.execution.targets == ["local"]


async def test_over_connect_the_local_targets_file_is_not_offered(engine, targets_file: Path):
    # a RemoteEngine's server has its own targets file: this machine's says nothing about it
    assert connected_app(RemoteEngine("http://127.0.0.1:9"), []).targets_path is None
    assert make_app(engine).targets_path == targets_file
    app = make_app(engine)
    app.targets_path = None  # as with --connect
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_launch(pilot)
        assert dialog.offered == ["local"]
        assert "on (the server's)" in screen_text(app)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: dialog.query_one("#target-select").expanded, what="the picker open")
        assert "web1" not in screen_text(app)

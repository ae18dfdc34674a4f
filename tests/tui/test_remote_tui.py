"""The TUI attached over HTTP (`stepflow tui --connect URL`), against a real `stepflow serve` process.

Each test starts `stepflow serve --port 0 --ws-port 0` on a fresh data directory, connects a real
`RemoteEngine` to it and drives the app built the way `run_tui` builds it for `--connect`, with keys
only. Commands are typed into the launch dialog and run in the server's working directory (the
test's `work` folder), so a long script is written there and launched as `sh NAME.sh`: typing costs a
frame per key. The scripts wait on flag files the test creates, so a "running" state lasts as long
as the test needs it; every wait is a predicate polled between frames under `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from textual import events
from textual.message import Message
from textual.notifications import Notification
from textual.pilot import Pilot
from textual.widgets import OptionList

from api_compat.monitor.client import RemoteEngine
from engine.model import ExecutionStatus, Step, StepStatus
from stepflow_tui.app import StepflowApp
from stepflow_tui.launch import connected_app
from stepflow_tui.screens.dialogs import ConfirmDialog
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.screens.executions import ExecutionsScreen
from stepflow_tui.screens.launch import LaunchDialog
from stepflow_tui.widgets.execution_list import ExecutionList
from stepflow_tui.widgets.log_view import LogView
from stepflow_tui.widgets.status_strip import StatusStrip
from stepflow_tui.widgets.step_tree import StepTree
from tests.engine_helpers import submit_command
from tests.serve_process import stepflow_serve
from tests.tui.screen_text import screen_text

pytestmark = pytest.mark.timeout(120)

BAD_WORKFLOW = "name: broken\nsteps:\n  - name: a\n    runn: echo hi\n"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The server's working directory: where typed commands run."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
async def server(tmp_path: Path, work: Path) -> AsyncIterator[str]:
    async with stepflow_serve(tmp_path / "served", work) as url:
        yield url


@pytest.fixture
async def remote(server: str) -> AsyncIterator[RemoteEngine]:
    async with RemoteEngine(server, max_reconnect_delay=0.2) as client:
        yield client


def remote_app(remote: RemoteEngine, workflow_dirs: list[Path]) -> StepflowApp:
    # as `run_tui` builds it for --connect (no keys file, no file watching for tests)
    return connected_app(remote, workflow_dirs, keys_path=Path("/nonexistent/keys.toml"), watch_workflows=False)


async def until(pilot: Pilot, predicate: Callable[[], object], what: str, within: float = 20.0) -> None:
    """Let the app run frames until `predicate()` holds; fail with the screen after `within` s."""
    try:
        async with asyncio.timeout(within):
            while not predicate():
                await pilot.pause(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}; screen:\n{screen_text(pilot.app)}") from None


def shown(app: StepflowApp, *texts: str) -> bool:
    screen = screen_text(app)
    return all(text in screen for text in texts)


def listed(app: StepflowApp, *rows: str) -> bool:
    """Each "glyph name" is a row of the list (the short id between them)."""
    lines = screen_text(app).splitlines()
    return all(any(ln.startswith(row.split(" ", 1)[0]) and row.split(" ", 1)[1] in ln for ln in lines)
               for row in rows)


def view(app: StepflowApp) -> ExecutionScreen:
    assert isinstance(app.screen, ExecutionScreen), type(app.screen).__name__
    return app.screen


def status_is(app: StepflowApp, status: ExecutionStatus) -> Callable[[], bool]:
    return lambda: isinstance(app.screen, ExecutionScreen) and app.screen.execution.status is status


def step_status(app: StepflowApp, name: str) -> StepStatus | None:
    tree = app.screen.query_one(StepTree)
    return next((s.status for s in tree.steps.values() if s.name == name), None)


async def launch_command(pilot: Pilot, command: str) -> ExecutionScreen:
    """`n`, the command typed into the launch dialog, enter: the new execution's view opens."""
    app = pilot.app
    await pilot.press("n")

    def scanned() -> bool:  # the list says what it found, or that it found nothing
        return isinstance(app.screen, LaunchDialog) and app.screen.query_one(OptionList).option_count > 0

    def in_command_field() -> bool:
        return app.screen.focused is not None and app.screen.focused.id == "command-input"

    # the list keeps the focus when it found workflows, else the cursor goes to the command field:
    # wait for that (a tab pressed before the cursor got there would take it on to the next field)
    await until(pilot, lambda: scanned() and (app.screen.workflows or in_command_field()),
                "the launch dialog's workflow list, or the cursor in the command field")
    if not in_command_field():
        await pilot.press("tab")
    assert in_command_field()
    await pilot.press(*command, "enter")
    await until(pilot, lambda: isinstance(app.screen, ExecutionScreen), "the execution view")
    return view(app)  # type: ignore[arg-type]


LIVE_SCRIPT = """\
echo STEP_START:build
echo compiling part one
until test -e go; do sleep 0.02; done
echo compiling part two
until test -e done; do sleep 0.02; done
echo STEP_COMPLETE:build
echo STEP_START:test
echo all tests pass
echo STEP_COMPLETE:test
"""
WAIT_SCRIPT = "echo STEP_START:wait\necho waiting now\nuntil test -e never; do sleep 0.02; done\n"
GREET_SCRIPT = "echo STEP_START:greet\necho hello over http\necho STEP_COMPLETE:greet\n"


async def test_a_running_execution_shows_its_steps_and_live_log(remote: RemoteEngine, work: Path) -> None:
    (work / "live.sh").write_text(LIVE_SCRIPT)
    go, done = work / "go", work / "done"
    app = remote_app(remote, [work])
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ExecutionsScreen), "the executions list")
        assert shown(app, remote.base_url)
        screen = await launch_command(pilot, "sh live.sh")
        log = screen.query_one(LogView)

        # running: the step in the tree with the running glyph, its first line in the log pane
        await until(pilot, status_is(app, ExecutionStatus.RUNNING), "running")
        await until(pilot, lambda: step_status(app, "build") is StepStatus.RUNNING, "build running")
        await until(pilot, lambda: shown(app, "▶ build", "compiling part one"), "the step and its line")
        assert not shown(app, "compiling part two") and step_status(app, "test") is None
        lines_before = log.total

        # a line printed now arrives on screen while the execution keeps running
        go.touch()
        await until(pilot, lambda: shown(app, "compiling part two"), "a live line")
        assert log.total > lines_before
        assert view(app).execution.status is ExecutionStatus.RUNNING and shown(app, "▶ build")

        # finished: completed glyphs on both steps and in the title, every line there
        done.touch()
        await until(pilot, status_is(app, ExecutionStatus.COMPLETED), "completed")
        await until(pilot, lambda: step_status(app, "test") is StepStatus.COMPLETED, "test completed")
        await until(pilot, lambda: shown(app, "✓ build", "✓ test", "all tests pass"), "the glyphs")
        assert shown(app, "✓ sh live.sh  completed") and view(app).execution.exit_code == 0
        assert [line.text for line in await remote.get_log_lines(view(app).execution.id)
                if not line.text.startswith("STEP_")] == \
            ["compiling part one", "compiling part two", "all tests pass"]

        # back on the list: the finished execution, with its glyph
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ExecutionsScreen), "the executions list")
        listing = app.screen.query_one(ExecutionList)
        await until(pilot, lambda: listing.total == 1 and listing.current is not None
                    and listing.current.status is ExecutionStatus.COMPLETED, "the list row completed")
        await until(pilot, lambda: listed(app, "✓ sh live.sh"), "the completed glyph in the list")


async def test_cancel_a_running_remote_execution(remote: RemoteEngine, work: Path) -> None:
    (work / "wait.sh").write_text(WAIT_SCRIPT)
    app = remote_app(remote, [work])
    async with app.run_test(size=(120, 40)) as pilot:
        await launch_command(pilot, "sh wait.sh")
        await until(pilot, lambda: step_status(app, "wait") is StepStatus.RUNNING, "the step running")
        await until(pilot, lambda: shown(app, "▶ wait", "waiting now"), "the step and its line")
        execution_id = view(app).execution.id

        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("n")  # no: it keeps running
        await until(pilot, lambda: isinstance(app.screen, ExecutionScreen), "back on the view")
        assert view(app).execution.status is ExecutionStatus.RUNNING

        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("y")
        await until(pilot, status_is(app, ExecutionStatus.CANCELLED), "cancelled", within=30)
        await until(pilot, lambda: shown(app, "■ sh wait.sh  cancelled", "■ wait"), "the glyphs")
        stored = await remote.get_execution(execution_id)
        assert stored is not None and stored.status is ExecutionStatus.CANCELLED
        await until(pilot, lambda: not app.running, "no execution counted as running")


async def test_rerun_opens_the_new_execution(remote: RemoteEngine, work: Path) -> None:
    (work / "greet.sh").write_text(GREET_SCRIPT)
    app = remote_app(remote, [work])
    async with app.run_test(size=(120, 40)) as pilot:
        await launch_command(pilot, "sh greet.sh")
        await until(pilot, status_is(app, ExecutionStatus.COMPLETED), "completed")
        await until(pilot, lambda: shown(app, "hello over http", "✓ greet"), "the output")
        first = view(app).execution.id

        await pilot.press("r")
        await until(pilot, lambda: view(app).execution.id != first, "the rerun opened")
        assert view(app).execution.rerun_of == first
        await until(pilot, status_is(app, ExecutionStatus.COMPLETED), "the rerun completed")
        await until(pilot, lambda: shown(app, "✓ sh greet.sh", "✓ greet", "hello over http"), "output")

        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, ExecutionsScreen), "the executions list")
        listing = app.screen.query_one(ExecutionList)
        await until(pilot, lambda: listing.total == 2, "both executions listed")


async def test_a_bad_workflow_is_a_notification_not_a_crash(remote: RemoteEngine, tmp_path: Path) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "broken.yaml").write_text(BAD_WORKFLOW)
    app = remote_app(remote, [workflows])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, LaunchDialog) and app.screen.workflows, "the file")
        await pilot.press("enter")  # the only workflow file, highlighted

        def errors() -> list[Notification]:
            return [n for n in app._notifications if n.severity == "error"]

        await until(pilot, errors, "an error notification")
        note = errors()[0]
        assert note.title == "Invalid workflow"
        assert "broken.yaml" in note.message and "runn" in note.message
        assert not isinstance(app.screen, ExecutionScreen) and app.is_running

        # and the app still works: a command launched next runs
        await launch_command(pilot, "echo still fine")
        await until(pilot, status_is(app, ExecutionStatus.COMPLETED), "completed")
        await until(pilot, lambda: shown(app, "still fine"), "the output")


class HeldSteps(RemoteEngine):
    """Reads an execution's steps, then holds the answer until `release` is set."""

    def __init__(self, url: str) -> None:
        super().__init__(url, max_reconnect_delay=0.2)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def get_steps(self, execution_id: str) -> list[Step]:
        steps = await super().get_steps(execution_id)
        self.reading.set()
        await self.release.wait()
        return steps


async def test_leaving_a_view_that_still_reads_is_clean(server: str) -> None:
    async with HeldSteps(server) as remote:
        execution = await submit_command(remote, "echo done")
        app = remote_app(remote, [])

        def answer_during_teardown(message: Message) -> None:
            # the view's widgets go first, its reading worker last: the answer comes in between
            if isinstance(message, events.Unmount) and isinstance(message._sender, StepTree):
                remote.release.set()

        async with app.run_test(size=(120, 40), message_hook=answer_during_teardown) as pilot:
            listing = app.screen.query_one(ExecutionList)
            await until(pilot, lambda: listing.current is not None and listing.current.id == execution.id
                        and listing.current.status is ExecutionStatus.COMPLETED, "the execution listed")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ExecutionScreen) and remote.reading.is_set(),
                        "the view reading its steps")
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, ExecutionsScreen), "back on the list")
            await until(pilot, remote.release.is_set, "the view's widgets removed")
            await pilot.press("enter")  # and the app goes on
            await until(pilot, lambda: isinstance(app.screen, ExecutionScreen) and shown(app, "✓ echo done"),
                        "the view again")


async def test_an_execution_deleted_by_another_client_leaves_the_list(remote: RemoteEngine, server: str) -> None:
    keep = await submit_command(remote, "echo keep me", name="keeper")
    gone = await submit_command(remote, "echo delete me", name="doomed")
    app = remote_app(remote, [])
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, ExecutionsScreen), "the executions list")
        listing = app.screen.query_one(ExecutionList)
        await until(pilot, lambda: listing.total == 2 and listed(app, "✓ doomed", "✓ keeper"), "both listed")

        # someone else deletes it, through the REST API: the socket tells this TUI
        async with aiohttp.ClientSession() as other:
            async with other.delete(f"{server}/api/executions/{gone.id}") as resp:
                assert resp.status == 200, await resp.text()
        await until(pilot, lambda: listing.total == 1 and not shown(app, "doomed"), "the row gone")
        assert listed(app, "✓ keeper") and listing.current is not None and listing.current.id == keep.id


async def test_the_status_strip_shows_the_connection_lost_and_back(tmp_path: Path, work: Path) -> None:
    """No CPU or memory of this machine: the state of the connection to the server, a warning while
    it is lost; `stepflow serve` stopped, then started again on the same port."""
    data_dir = tmp_path / "served"
    first = stepflow_serve(data_dir, work)
    url = await first.__aenter__()
    running = True
    try:
        async with RemoteEngine(url, max_reconnect_delay=0.2) as remote:
            app = remote_app(remote, [work])
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: isinstance(app.screen, ExecutionsScreen), "the executions list")
                strip = app.screen.query_one(StatusStrip)
                warning = strip.get_component_rich_style("status-strip--warning")

                def warned() -> bool:
                    return any(span.style == warning for span in strip.render().spans)

                await until(pilot, lambda: shown(app, f"connected to {url}"), "connected")
                assert not warned() and "cpu" not in screen_text(app)

                running = False
                await first.__aexit__(None, None, None)  # SIGTERM: the server goes away
                await until(pilot, lambda: shown(app, f"reconnecting to {url}"), "reconnecting")
                assert warned()

                async with stepflow_serve(data_dir, work, port=int(url.rsplit(":", 1)[1])):
                    await until(pilot, lambda: shown(app, f"connected to {url}") and not warned(),
                                "connected again")
                    # and the app works on: a command launched now runs on the new server
                    await launch_command(pilot, "echo back again")
                    await until(pilot, status_is(app, ExecutionStatus.COMPLETED), "completed")
                    await until(pilot, lambda: shown(app, "back again"), "the output")
    finally:
        if running:
            await first.__aexit__(None, None, None)

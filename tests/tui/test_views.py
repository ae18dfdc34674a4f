"""Pilot tests of the screens over a real SQLite store seeded with fixed data."""

from __future__ import annotations

from pathlib import Path

from engine.events import LinesLogged
from engine.model import Stream
from stepflow_tui.screens.dialogs import HelpScreen
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.widgets.execution_list import ExecutionList
from stepflow_tui.widgets.log_view import LogView
from stepflow_tui.widgets.step_tree import StepTree
from tests.tui.conftest import fixed_clock, make_app, wait_for
from tests.tui.pilot_steps import open_selected
from tests.tui.screen_text import screen_text
from tests.tui.seed import NOW, RUNNING_ID


async def open_running(pilot) -> ExecutionScreen:
    screen = await open_selected(pilot)
    await wait_for(pilot, lambda: screen.query_one(LogView).total == 8 and screen.step_tree.steps, what="log")
    return screen


def step_named(screen: ExecutionScreen, name: str):
    return next(s for s in screen.step_tree.steps.values() if s.name == name)


def select_step(screen: ExecutionScreen, name: str):
    """Focus the step tree and move its cursor to the step `name`: that step."""
    tree = screen.query_one(StepTree)
    tree.focus()
    step = step_named(screen, name)
    tree.move_cursor(tree._step_nodes[step.id])
    return step


async def test_list_shows_executions_newest_first(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        lst = app.screen.query_one(ExecutionList)
        await wait_for(pilot, lambda: lst.loaded)
        assert lst.total == 5
        text = screen_text(app)
        names = [n for n in ("build-and-test", "queued-report", "long-import", "deploy-web", "nightly-backup")]
        positions = [text.index(n) for n in names]
        assert positions == sorted(positions)
        rows = text.splitlines()
        for glyph, name in (("✗", "deploy-web"), ("✓", "nightly-backup"), ("■", "long-import")):
            assert any(row.startswith(glyph) and name in row for row in rows), name
        assert "1 running" in text


async def test_filter_by_status_and_text_then_clear(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        lst = app.screen.query_one(ExecutionList)
        await wait_for(pilot, lambda: lst.loaded)
        await pilot.press("slash", *"failed")
        await wait_for(pilot, lambda: lst.total == 1, what="status filter")
        assert lst.current.name == "deploy-web"
        await pilot.press("enter")  # back to the list, filter kept
        assert lst.has_focus and lst.total == 1
        await pilot.press("escape")
        await wait_for(pilot, lambda: lst.total == 5, what="cleared filter")
        await pilot.press("slash", *"backup")
        await wait_for(pilot, lambda: lst.total == 1 and lst.current.name == "nightly-backup", what="text filter")


async def test_open_execution_shows_tree_and_tail_of_log(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_running(pilot)
        text = screen_text(app)
        assert "build-and-test" in text.splitlines()[0]
        for name in ("local", "web1", "setup", "test", "unit", "lint", "deploy"):
            assert name in text
        assert "3 style" in text  # the failed step's error
        assert "WARNING: database slow to answer" in text
        assert "!unit   WARNING" in text  # stderr gutter, readable without colour; the step's name
        tree = screen.query_one(StepTree)
        unit = next(s for s in tree.steps.values() if s.name == "unit")
        tree.move_cursor(tree._step_nodes[unit.id])
        await wait_for(pilot, lambda: "cpu 87%" in screen_text(app), what="resource usage")
        # in the detail under the tree (wrapped where the pane's width falls)
        assert "123.0" in screen_text(app).split("cpu 87%", 1)[1]
        await pilot.press("escape")
        assert not isinstance(app.screen, ExecutionScreen)
        assert screen.execution.id == RUNNING_ID


async def test_step_detail_shows_the_error_at_80_columns(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_running(pilot)
        select_step(screen, "lint")
        await wait_for(pilot, lambda: "3 style errors" in screen_text(app), what="error in the detail line")


async def test_selecting_a_step_filters_the_log(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_running(pilot)
        setup = select_step(screen, "setup")
        await pilot.press("enter")
        log = screen.query_one(LogView)
        await wait_for(pilot, lambda: log.window.step_ids == [setup.id] and log.total == 2, what="filtered log")
        await wait_for(pilot, lambda: "collected 120 items" not in screen_text(app), what="repaint")
        assert "installing dependencies" in screen_text(app)
        screen.step_tree.move_cursor(screen.step_tree.root)
        await pilot.press("enter")
        await wait_for(pilot, lambda: log.window.step_ids is None and log.total == 8, what="all lines")


async def test_log_search_next_previous_and_toggles(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_running(pilot)
        log = screen.query_one(LogView)
        await pilot.press("slash", *"test_", "enter")
        await wait_for(pilot, lambda: log.match_row == 4, what="first match")
        await pilot.press("n")
        await wait_for(pilot, lambda: log.match_row == 5, what="next match")
        await pilot.press("N")
        await wait_for(pilot, lambda: log.match_row == 4, what="previous match")
        assert not log.follow
        await pilot.press("f")
        assert log.follow
        await pilot.press("t")
        assert log.timestamps
        await wait_for(pilot, lambda: "09:25:08.000" in screen_text(app), what="timestamps")
        await pilot.press("w")
        assert log.wrap
        assert "STEP_START:unit" not in screen_text(app)  # marker lines hidden at first
        await pilot.press("m")
        assert log.show_markers
        await wait_for(pilot, lambda: "STEP_START:unit" in screen_text(app), what="markers shown")


async def test_live_lines_are_followed(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_running(pilot)
        log = screen.query_one(LogView)
        unit = step_named(screen, "unit")
        lines = tuple(f"live line {i}" for i in range(100))
        await seeded_client.publish(LinesLogged(RUNNING_ID, unit.id, Stream.STDOUT, 8, NOW, lines))
        await wait_for(pilot, lambda: log.total == 108, what="live lines")
        await wait_for(pilot, lambda: "live line 99" in screen_text(app), what="tail shown")


async def test_a_burst_of_live_lines_is_one_or_two_repaints_and_the_tail_is_shown(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_running(pilot)
        log = screen.query_one(LogView)
        unit = step_named(screen, "unit")
        repaints = []
        rows_changed = log._rows_changed

        def counted() -> None:
            repaints.append(log.total)
            rows_changed()

        log._rows_changed = counted
        seq = 8
        for burst in range(50):
            lines = tuple(f"burst {burst} line {i}" for i in range(40))
            log.add_live(LinesLogged(RUNNING_ID, unit.id, Stream.STDOUT, seq, NOW, lines).log_lines())
            seq += len(lines)
        assert log.total == seq  # every line is in the window at once, whatever the repaints
        await wait_for(pilot, lambda: repaints and repaints[-1] == seq, what="the deferred repaint")
        assert len(repaints) <= 2, repaints
        await wait_for(pilot, lambda: "burst 49 line 39" in screen_text(app), what="tail shown")
        assert log.follow


async def test_log_keys_are_remappable_and_the_search_box_keeps_its_letters(seeded_client, tmp_path: Path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys]\n"log.timestamps" = "y"\n')
    app = make_app(seeded_client, clock=fixed_clock, keys_path=keys)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_running(pilot)
        log = screen.query_one(LogView)
        await pilot.press("y")
        assert log.timestamps
        await pilot.press("t")  # no longer bound
        assert log.timestamps
        await pilot.press("slash", "y", "w")
        assert screen.query_one("#log-search").value == "yw"
        assert log.timestamps and not log.wrap
        await pilot.press("escape", "w")
        assert log.wrap


async def test_artifacts_preview_and_save(seeded_client, tmp_path: Path):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_running(pilot)
        await pilot.press("a")
        await wait_for(pilot, lambda: "All **12** tests passed." in screen_text(app), what="preview")
        text = screen_text(app)
        assert "report.md" in text and "coverage.bin" in text
        await pilot.press("s")
        target = tmp_path / "copy.md"
        box = app.screen.query_one("#prompt-input")
        box.value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: target.exists(), what="saved copy")
        assert target.read_bytes().startswith(b"# Build report")


async def test_help_lists_bindings_with_ids(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        ids = {row[3] for row in app.screen.rows}
        assert {"app.quit", "app.launch", "executions.filter", "execution.cancel", "list.open"} <= ids
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_keys_can_be_remapped_from_a_file(seeded_client, tmp_path: Path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys]\n"app.help" = "h"\n"nonsense" = 3\n')
    app = make_app(seeded_client, clock=fixed_clock, keys_path=keys)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExecutionList).loaded)
        await pilot.press("h")
        assert isinstance(app.screen, HelpScreen)
        assert any("nonsense" in n.message for n in app._notifications)


async def test_quit_without_running_executions_exits(tmp_path: Path):
    from storage import SqliteStore
    from tests.tui.store_client import StoreClient

    client = StoreClient(SqliteStore(tmp_path / "empty.sqlite"))
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExecutionList).loaded)
        assert "No executions yet" in screen_text(app)
        await pilot.press("q")
        await pilot.pause(0.1)
        assert app._exit
    await client.aclose()

""""All output" of several steps: each line carries its step's name; marker lines are hidden until
`m`, whose footer label says what it will do."""

from __future__ import annotations

from stepflow_tui.screens.execution import ExecutionScreen
from tests.tui.conftest import fixed_clock, make_app, wait_for
from tests.tui.pilot_steps import open_selected
from tests.tui.screen_text import screen_text


def footer(app) -> str:
    return screen_text(app).splitlines()[-1]


def log_lines(app) -> list[str]:
    """The log pane's rows (right of the tree's border)."""
    return [line.split("▕", 1)[1] for line in screen_text(app).splitlines() if "▕" in line]


async def open_with_log(pilot) -> None:
    """Open the running execution and wait for its log's lines."""
    await open_selected(pilot)
    await wait_for(pilot, lambda: any("collected 120 items" in ln for ln in log_lines(pilot.app)), what="the log")


async def test_all_output_labels_lines_with_their_step_and_hides_markers(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(120, 30)) as pilot:
        await open_with_log(pilot)
        rows = log_lines(app)
        assert any(ln.startswith(" setup  installing dependencies") for ln in rows), rows
        assert any(ln.startswith(" unit   collected 120 items") for ln in rows), rows
        assert not any("STEP_START" in ln or "STEP_PROGRESS" in ln for ln in rows), rows
        assert "m Show markers" in footer(app)
        await pilot.press("m")
        await wait_for(pilot, lambda: any("STEP_PROGRESS:60" in ln for ln in log_lines(app)), what="markers shown")
        assert "m Hide markers" in footer(app)
        await pilot.press("m")
        await wait_for(pilot, lambda: not any("STEP_PROGRESS" in ln for ln in log_lines(app)), what="hidden again")
        assert "m Show markers" in footer(app)


async def test_a_view_of_one_step_has_no_labels(seeded_client):
    app = make_app(seeded_client, clock=fixed_clock)
    async with app.run_test(size=(120, 30)) as pilot:
        await open_with_log(pilot)
        await pilot.press("T", "down", "down", "enter")  # the tree: All output, local, setup
        await wait_for(pilot, lambda: any(ln.startswith(" installing dependencies") for ln in log_lines(app)),
                       what="setup's lines, unlabelled")


async def test_parallel_steps_of_a_real_run_are_told_apart(engine, tmp_path):
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "two.yaml").write_text(
        "name: two\nsteps:\n"
        "  - name: left\n    run: |\n      echo '::group::warm up'\n      echo from-left\n      echo '::endgroup::'\n"
        "  - name: right\n    run: |\n      echo STEP_PROGRESS:50\n      echo from-right\n"
    )
    app = make_app(engine, workflow_dirs=[folder])
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen.query_one("#workflow-list").highlighted, type(None)),
                       what="the launch dialog")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen), what="execution view")
        await wait_for(pilot, lambda: any("from-left" in ln for ln in log_lines(app))
                       and any("from-right" in ln for ln in log_lines(app)), what="both steps' lines")
        rows = log_lines(app)
        # a group is a step of its own (in the tree under `left`): its lines carry its name
        assert any(ln.startswith(" warm up from-left") for ln in rows), rows
        assert any(ln.startswith(" right   from-right") for ln in rows), rows
        assert not any("::group::" in ln or "STEP_PROGRESS" in ln for ln in rows), rows



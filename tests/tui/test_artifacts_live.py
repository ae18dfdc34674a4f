"""The artifacts tab of an execution launched from the TUI: every artifact listed and readable
without reopening the view, however the store writer's commits fall against the events.

The store writer commits in batches, so the events tell of an artifact before the store has it.
To make that moment last, the tests hold SQLite's write lock from another connection (as another
process writing the file would) while the workflow makes its artifacts; the engine's writer waits
on it (busy timeout), the TUI sees the events at once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from engine.events import ArtifactAdded
from engine.model import ExecutionStatus
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.screens.executions import ExecutionsScreen
from stepflow_tui.screens.launch import LaunchDialog
from stepflow_tui.widgets.artifact_pane import ArtifactPane
from storage.paths import database_path
from tests.tui.conftest import make_app, wait_for
from tests.tui.screen_text import screen_text

#: artifacts.yaml of sample_workflows, waiting for a `gate` file first
GATED = """\
name: gated-artifacts
steps:
  - name: report
    run: |
      while [ ! -f gate ]; do sleep 0.02; done
      mkdir -p out
      printf 'name,score\\nalpha,0.91\\n' > out/scores.csv
      printf '# Report\\n\\nAll good.\\n' > out/report.md
      echo "ARTIFACT:out/report.md:Summary report"
      echo "##teamcity[publishArtifacts 'out/scores.csv']"
      echo '{"passed": 42}' > out/results.json
    artifacts: ["out/*.json"]
"""


@contextlib.contextmanager
def store_write_locked(data_dir: Path) -> Iterator[None]:
    conn = sqlite3.connect(database_path(data_dir), isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.rollback()
        conn.close()


async def launch_gated(pilot, folder: Path) -> ExecutionScreen:
    app = pilot.app
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, LaunchDialog) and app.screen.workflows)
    assert [p.name for p in app.screen.workflows][0] == "gated.yaml"
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen), what="execution view")
    return app.screen


def previewed(app) -> str:
    text = screen_text(app)
    for mark in ("All good", "name,score", "passed", "Cannot read", "being stored"):
        if mark in text:
            return mark
    return ""


async def test_artifacts_seen_while_watching_read_once_the_store_has_them(engine, tmp_path):
    """The events list three artifacts before the store has them: the table shows all three, and the
    preview waits for the store instead of saying "no artifact" for good."""
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "gated.yaml").write_text(GATED)
    app = make_app(engine, workflow_dirs=[folder])
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await launch_gated(pilot, folder)
        pane = screen.query_one(ArtifactPane)
        with store_write_locked(tmp_path / "data"):
            (folder / "gate").touch()
            await wait_for(pilot, lambda: len(pane.artifacts) == 3, what="three artifacts")
            await pilot.press("a")
            # the store has not committed it: the preview says so, not "no artifact"
            await wait_for(pilot, lambda: previewed(app) == "being stored", what="the preview waiting")
        # the store commits a moment after the lock goes: the preview shows the file, no error stays
        await wait_for(pilot, lambda: screen.execution.status is ExecutionStatus.COMPLETED, what="completed")
        await wait_for(pilot, lambda: previewed(app) == "All good", what="the report's preview")
        for expected in ("name,score", "passed"):
            await pilot.press("down")
            await wait_for(pilot, lambda want=expected: previewed(app) == want, what=f"preview {expected}")
        for name in ("Summary report", "scores.csv", "results.json"):
            assert name in screen_text(app)


async def test_artifacts_made_while_the_view_was_closed_show_when_it_opens(engine, tmp_path):
    """The artifacts came while the list was on screen, and the store had not committed them when
    the view opened: the view lists them all the same."""
    folder = tmp_path / "wf"
    folder.mkdir()
    (folder / "gated.yaml").write_text(GATED)
    app = make_app(engine, workflow_dirs=[folder])
    async with app.run_test(size=(100, 30)) as pilot:
        await launch_gated(pilot, folder)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ExecutionsScreen), what="the list")
        subscription = engine.subscribe()
        seen = []
        try:
            with store_write_locked(tmp_path / "data"):
                (folder / "gate").touch()
                async with asyncio.timeout(15):
                    async for event in subscription:
                        if isinstance(event, ArtifactAdded):
                            seen.append(event.artifact)
                            if len(seen) == 3:
                                break
                await pilot.press("enter")
                await wait_for(pilot, lambda: isinstance(app.screen, ExecutionScreen), what="execution view")
                await pilot.press("a")
                pane = app.screen.query_one(ArtifactPane)
                await wait_for(pilot, lambda: len(pane.artifacts) == 3, what="three artifacts")
        finally:
            subscription.close()
        await wait_for(pilot, lambda: previewed(app) == "All good", what="the report's preview")
        for name in ("Summary report", "scores.csv", "results.json"):
            assert name in screen_text(app)

"""Snapshots at 80x24 and 120x40, read from a real SQLite store seeded with fixed data.

Update with `pytest tests/tui/test_snapshots.py --snapshot-update` after a deliberate change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InvalidRequest
from stepflow_tui.app import StepflowApp
from storage import SqliteStore
from tests.tui.conftest import fixed_clock, seed_store
from tests.tui.seed import ARTIFACT_BYTES
from tests.tui.store_client import StoreClient

HERE = Path(__file__).parent
WORKFLOWS = HERE / "data" / "workflows"
SIZES = [(80, 24), (120, 40)]


class SnapshotApp(StepflowApp):
    """The app over a read-only store client, closing the store when it ends."""

    async def on_unmount(self) -> None:
        await super().on_unmount()
        await self.client.aclose()


def build_app(path: Path, *, seeded: bool = True) -> SnapshotApp:
    if seeded:
        seed_store(path)
    client = StoreClient(SqliteStore(path), description="/data/stepflow", artifact_bytes=ARTIFACT_BYTES)
    return SnapshotApp(client, clock=fixed_clock, sample_machine=False, watch_workflows=False,
                       workflow_dirs=[WORKFLOWS], keys_path=Path("/nonexistent/keys.toml"))


async def settle(pilot) -> None:
    # workers read the store: give them time, then let the screen repaint
    for _ in range(6):
        await pilot.pause(0.1)
    await pilot.wait_for_scheduled_animations()


def then_press(before, *keys: str):
    """A `run_before` that does `before`, presses `keys` and lets the screen settle."""

    async def run_before(pilot) -> None:
        await before(pilot)
        await pilot.press(*keys)
        await settle(pilot)

    return run_before


open_running = then_press(settle, "enter")


@pytest.fixture(autouse=True)
def _cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    # workflow paths are shown relative to the current directory
    # the checkout itself: its own name (CI clones it elsewhere) must not reach the snapshots
    monkeypatch.chdir(HERE.parents[1])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_empty_state(snap_compare, tmp_path, size):
    assert snap_compare(build_app(tmp_path / "empty.sqlite", seeded=False), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_list_with_mixed_statuses(snap_compare, tmp_path, size):
    assert snap_compare(build_app(tmp_path / "db.sqlite"), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_running_execution_with_progress(snap_compare, tmp_path, size):
    assert snap_compare(build_app(tmp_path / "db.sqlite"), terminal_size=size, run_before=open_running)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_log_with_search(snap_compare, tmp_path, size):
    run_before = then_press(open_running, "slash", *"test_", "enter")
    assert snap_compare(build_app(tmp_path / "db.sqlite"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_artifacts(snap_compare, tmp_path, size):
    run_before = then_press(open_running, "a")
    assert snap_compare(build_app(tmp_path / "db.sqlite"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_launch_dialog(snap_compare, tmp_path, size):
    run_before = then_press(settle, "n")
    assert snap_compare(build_app(tmp_path / "db.sqlite"), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_error_notification(snap_compare, tmp_path, size):
    app = build_app(tmp_path / "db.sqlite")
    app.client.submit_error = InvalidRequest("unknown target 'web9' (known: local)")

    async def run_before(pilot) -> None:
        await then_press(settle, "n")(pilot)
        pilot.app.screen.query_one("#command-input").focus()
        await pilot.press(*"make deploy", "enter")
        await settle(pilot)

    assert snap_compare(app, terminal_size=size, run_before=run_before)

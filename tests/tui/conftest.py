"""Fixtures for the TUI tests: a real engine on a real SQLite file, a store seeded with fixed data,
and the app built the way the CLI builds it (machine sampling and file watching off)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engine.engine import Engine
from stepflow_tui.app import StepflowApp
from storage import SqliteStore
from tests import samples
from tests.engine_helpers import engine_at
from tests.tui.seed import ARTIFACT_BYTES, NOW, build_events
from tests.tui.store_client import StoreClient

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = samples.SAMPLES  # this process's copy


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    # times on screen are local: make "local" the same everywhere
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture(autouse=True)
def _isolated_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    async with engine_at(tmp_path / "data") as eng:
        yield eng


def seed_store(path: Path, *, extra_lines: int = 0) -> Path:
    """Write the fixed data set into a new SQLite file (in its own event loop)."""

    async def seed() -> None:
        store = SqliteStore(path)
        await store.open()
        try:
            await store.apply(build_events(extra_lines=extra_lines))
        finally:
            await store.close()

    asyncio.run(seed())
    return path


@pytest.fixture
def seeded_path(tmp_path: Path) -> Path:
    return seed_store(tmp_path / "seeded.sqlite")


@pytest.fixture
async def seeded_client(seeded_path: Path) -> AsyncIterator[StoreClient]:
    client = StoreClient(SqliteStore(seeded_path), description="/data/stepflow", artifact_bytes=ARTIFACT_BYTES)
    yield client
    await client.aclose()


def make_app(client, **kw) -> StepflowApp:
    kw.setdefault("sample_machine", False)
    kw.setdefault("watch_workflows", False)
    kw.setdefault("workflow_dirs", [SAMPLES])
    kw.setdefault("keys_path", Path("/nonexistent/keys.toml"))
    return StepflowApp(client, **kw)


def fixed_clock():
    return NOW


async def wait_for(pilot, predicate: Callable[[], object], limit: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            from tests.tui.screen_text import screen_text

            raise AssertionError(f"timed out waiting for {what}; screen:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)

"""The composition root's one engine builder (stepflow.wiring), which every command that runs
something (`exec`, `run`, `rerun`, `tui`, `serve`) starts its engine with."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.engine import Engine
from stepflow.wiring import YOUNG_OBJECTS, EngineOptions, running_engine, start_engine
from storage import SqliteStore
from storage.paths import database_path

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The builder freezes the process's objects and sets the collector's thresholds (as `stepflow`
    does); give them back after, as the tests share one process."""
    gc.unfreeze()
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_the_builder_reads_the_targets_file_and_applies_the_kill_grace(tmp_path: Path, unfrozen: None) -> None:
    targets_file = tmp_path / "targets.yaml"
    targets_file.write_text("web1: {type: ssh, host: example.org, user: deploy}\n")

    async def build() -> tuple[set[str], float]:
        async with running_engine(tmp_path / "data", kill_grace=0.5,
                                  options=EngineOptions(targets_file=targets_file)) as engine:
            return set(engine.config.targets), engine.config.kill_grace

    assert asyncio.run(build()) == ({"web1"}, 0.5)
    # the engine's store is the data directory's, and it was closed: `stepflow ls` reads it
    assert database_path(tmp_path / "data").exists()
    listed = subprocess.run([sys.executable, "-m", "stepflow.main", "ls", "--json"],
                            env={**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path / "data")}, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stdout + listed.stderr


async def test_the_program_tunes_the_gc_and_the_engine_library_does_not(tmp_path: Path, unfrozen: None) -> None:
    # an embedder's (or a test's) engine leaves the process's collector as it was
    thresholds = gc.get_threshold()
    engine = Engine(SqliteStore(database_path(tmp_path / "lib")), tmp_path / "lib")
    await engine.start()
    try:
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == thresholds
    finally:
        await engine.shutdown()
    # the `stepflow` program's engine: what exists once the store is open is out of the collector's
    # sight (its full passes over it stalled a workflow of short steps for 100-150 ms each)
    # and the young objects (a command printing markers makes hundreds of thousands a second) are
    # passed over less often
    engine = await start_engine(tmp_path / "cli", EngineOptions(targets={}))
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_OBJECTS > thresholds[0]
    finally:
        await engine.shutdown()


def test_tui_with_a_broken_targets_file_says_what_is_wrong_with_the_file(tmp_path: Path) -> None:
    # the TUI's engine comes from the same builder: a wrong targets file is the file's error
    # (exit 2), not "cannot open the data directory"
    targets_file = tmp_path / "targets.yaml"
    targets_file.write_text("web1: {type: ssh}\n")
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path / "data"), "STEPFLOW_TARGETS_FILE": str(targets_file)}
    done = subprocess.run([sys.executable, "-m", "stepflow.main", "tui", "--no-api"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(targets_file) in done.stderr and "cannot open the data directory" not in done.stderr

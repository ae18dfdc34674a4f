"""A kill -9 of the engine keeps the lines printed up to it, all but a bounded tail (issue 9, item 4):
what the engine read but had not committed is at most ~20,000 lines (engine.hub.MAX_UNCOMMITTED_LINES)
plus what the runner and the pipe hold for each command. Real `stepflow run`, real printers, SIGKILL,
and the SQLite file read with sqlite3 (bench/crash_loss.py measures the same at 1, 20, 100 printers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.crash_loss import run_once

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("measured")]  # see pyproject.toml


def test_a_fast_printer_loses_at_most_a_short_tail_to_a_kill_9(tmp_path: Path) -> None:
    # as fast as the pipe takes them: before the bound, ~1 s of lines (over a million) waited
    # in the store writer's queue and died with the engine
    outcome = run_once(tmp_path, 1, rate=0, seconds=1.5)
    assert outcome.prefix_ok, "the stored lines are not the first ones printed"
    assert outcome.stored > 0
    # the runner's read-ahead and the pipe (~600 KiB, ~55,000 of these lines) + the uncommitted lines
    assert outcome.lost <= 100_000, outcome


def test_parallel_printers_lose_at_most_half_a_second_to_a_kill_9(tmp_path: Path) -> None:
    outcome = run_once(tmp_path, 10, rate=5_000, seconds=1.5)
    assert outcome.prefix_ok, "the stored lines are not the first ones printed"
    assert outcome.stored > 0
    assert outcome.window_ms <= 500, outcome

"""A command printing marker steps at full speed through `stepflow exec`: every step is stored with
its status, times and lines, in order, and the plain output names every start and end (issue 16,
goal 4: the pump, the store writer and the printer take many steps per block of output)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAIRS = 10_000


def burst(n: int) -> str:
    """n marker steps, a line of output in each; every 500th has a parameter, every 1,000th fails."""
    return ("awk 'BEGIN{for(i=0;i<" + str(n) + ";i++){"
            "if (i % 500 == 0) print \"STEP_START:s\" i \"[duration=5]\"; else print \"STEP_START:s\" i; "
            "print \"line \" i; "
            "if (i % 1000 == 999) print \"STEP_ERROR:boom \" i; else print \"STEP_COMPLETE:s\" i}}'")


@pytest.mark.xdist_group("measured")  # a burst at full speed: one at a time (see pyproject.toml)
@pytest.mark.timeout(300)
def test_a_burst_of_10k_marker_steps_is_stored_and_printed_step_by_step_in_order(tmp_path: Path) -> None:
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "stepflow.main", "exec", "--plain", "--shell", "--", burst(PAIRS)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    # STEP_ERROR fails its step, not the command: the command itself exits 0
    assert result.returncode == 0, result.stderr[-2000:]

    # the printer: a line for each start and each end, in the order they were printed
    printed = [line for line in result.stdout.splitlines() if line.startswith(("▶ s", "✓ s", "✗ s"))]
    expected = []
    for i in range(PAIRS):
        expected.append(f"▶ s{i} started")
        expected.append(f"✗ s{i} failed" if i % 1000 == 999 else f"✓ s{i} completed")
    assert [" ".join(line.split()[:3]) for line in printed] == expected
    assert "boom 999" in printed[2 * 999 + 1]

    db = sqlite3.connect(tmp_path / "stepflow.db")
    try:
        steps = db.execute(
            "SELECT pk, name, status, step_index, created_at, started_at, completed_at, error_message, "
            "estimated_duration FROM steps WHERE kind = 'marker' ORDER BY step_index").fetchall()
        lines: dict[int, list[str]] = {}
        seqs = []
        for step_pk, seq, text in db.execute(
                "SELECT step_pk, seq, text FROM log_lines ORDER BY seq"):
            lines.setdefault(step_pk, []).append(text)
            seqs.append(seq)
    finally:
        db.close()

    assert len(steps) == PAIRS
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "log lines numbered without a gap"
    for i, (pk, name, status, _index, created, started, completed, error, estimated) in enumerate(steps):
        assert name == f"s{i}"
        failed = i % 1000 == 999
        assert status == ("failed" if failed else "completed"), name
        assert error == (f"boom {i}" if failed else None), name
        assert estimated == (5.0 if i % 500 == 0 else None), name
        assert created and started and completed and created <= started <= completed, name
        start = f"STEP_START:s{i}" + ("[duration=5]" if i % 500 == 0 else "")
        end = f"STEP_ERROR:boom {i}" if failed else f"STEP_COMPLETE:s{i}"
        assert lines.get(pk) == [start, f"line {i}", end], name
    # step by step in time too: each starts when (or after) the one before it ended
    assert all(steps[i][6] <= steps[i + 1][5] for i in range(PAIRS - 1))

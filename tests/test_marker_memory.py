"""Memory stays bounded whatever the count of marker steps: finished ones leave the live state once
stored (issue 9, item 11); what reads a live execution's steps gets them all from the store."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.events import StepAdded
from engine.model import ExecutionStatus, StepKind, StepStatus
from tests.engine_helpers import engine_at, finished, submit_command

ROOT = Path(__file__).resolve().parent.parent

#: runs a command and prints the peak RSS (KiB) of its process tree: ru_maxrss of RUSAGE_CHILDREN
#: covers everything this small process waited for, and nothing the test process ran before
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def pairs(n: int, then: str = "") -> str:
    """A shell command printing n marker pairs, a line of output in each step."""
    return (f"awk 'BEGIN{{for(i=0;i<{n};i++){{print \"STEP_START:s\" i; print \"line \" i; "
            f"print \"STEP_COMPLETE:s\" i}}}}'{then}")


def exec_peak_rss_mb(data: Path, n: int) -> float:
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
    cmd = [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "stepflow.main", "exec", "--plain",
           "--shell", "--", pairs(n)]
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.splitlines()[-1]) / 1024


def stored_marker_steps(data: Path) -> tuple[int, int]:
    db = sqlite3.connect(data / "stepflow.db")
    try:
        total, completed = db.execute(
            "SELECT count(*), sum(status = 'completed') FROM steps WHERE kind = 'marker'").fetchone()
    finally:
        db.close()
    return total, completed


@pytest.mark.xdist_group("measured")  # timed or measured: one at a time (see pyproject.toml)
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exec_of_100k_marker_steps_stores_every_one_and_memory_stays_near_a_1k_run(tmp_path: Path) -> None:
    small = exec_peak_rss_mb(tmp_path / "small", 1_000)
    big = exec_peak_rss_mb(tmp_path / "big", 100_000)
    assert stored_marker_steps(tmp_path / "small") == (1_000, 1_000)
    assert stored_marker_steps(tmp_path / "big") == (100_000, 100_000)
    # before: 290 MB for 100k pairs against ~60 MB for 1k (2.3 KB a step, held to the end)
    assert big - small < 30, f"peak RSS {big:.0f} MB for 100k marker steps, {small:.0f} MB for 1k"


@pytest.mark.xdist_group("measured")  # timed or measured: one at a time (see pyproject.toml)
@pytest.mark.timeout(300)
def test_exec_live_tree_shows_the_open_and_latest_steps_and_counts_the_rest(tmp_path: Path) -> None:
    """On a terminal, exec redraws its tree at each event: with every step in it, 1,000 steps took
    70 s (each redraw laid out all of them) and memory grew with them."""
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path), "COLUMNS": "100", "LINES": "40"}
    cmd = [sys.executable, "-m", "stepflow.main", "exec", "--shell", "--", pairs(3_000)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec on a terminal of its own
        os.chdir(ROOT)
        os.execve(cmd[0], cmd, env)
    output = bytearray()
    deadline = time.monotonic() + 120
    closed = False
    try:
        while not closed and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the terminal closed: exec ended
                chunk = b""
            closed = not chunk
            output += chunk
    finally:
        if not closed:
            os.kill(pid, 9)
        _pid, status = os.waitpid(pid, 0)
        os.close(fd)
    assert closed, "stepflow exec did not finish 3,000 marker steps within 120 s on a terminal"
    assert os.waitstatus_to_exitcode(status) == 0, output[-2000:]
    text = output.decode(errors="replace")
    # the final tree: the earlier steps counted, the last three named
    assert "2,997 earlier steps finished" in text, text[-2000:]
    assert "s2999" in text
    assert stored_marker_steps(tmp_path) == (3_000, 3_000)


async def test_a_live_executions_steps_come_whole_from_the_store_and_the_live_state(tmp_path: Path) -> None:
    """The steps of a running execution, as the API and the TUI read them, are every step so far
    (finished ones from the store, the open one as it is now) while the engine keeps only a few."""
    gate = tmp_path / "go"
    command = pairs(2_000, f"; echo STEP_START:last; while [ ! -e {gate} ]; do sleep 0.02; done")
    async with engine_at(tmp_path / "data") as engine:
        events = engine.subscribe()
        execution = await submit_command(engine, command)
        async with asyncio.timeout(60):
            async for event in events:
                if isinstance(event, StepAdded) and event.step.name == "last":
                    break
        await engine.writer.barrier()
        steps = await engine.get_steps(execution.id)
        markers = [s for s in steps if s.kind is StepKind.MARKER]
        assert [s.name for s in markers] == [f"s{i}" for i in range(2_000)] + ["last"]
        assert all(s.status is StepStatus.COMPLETED for s in markers[:-1])
        assert markers[-1].status is StepStatus.RUNNING
        assert [s.index for s in steps] == sorted(s.index for s in steps)
        live = await engine.get_execution(execution.id)
        assert live is not None and live.total_steps == 2_001 and live.completed_steps == 2_000
        gate.touch()
        done = await finished(engine, execution)
        assert done.status is ExecutionStatus.COMPLETED
        assert done.total_steps == done.completed_steps == 2_001
        stored = await engine.get_steps(execution.id)
        assert len([s for s in stored if s.kind is StepKind.MARKER]) == 2_001


def test_the_tuis_cache_of_live_steps_keeps_the_open_and_latest_finished_ones() -> None:
    from engine.events import StepFinished
    from engine.execution.transitions import move_step
    from engine.model import Step
    from stepflow_tui.live import KEEP_FINISHED, LiveCache

    cache = LiveCache()
    workflow_step = Step(id="w", execution_id="e", name="build", kind=StepKind.WORKFLOW, index=0)
    move_step(workflow_step, StepStatus.RUNNING)
    cache.apply([StepAdded(workflow_step.snapshot())])
    count = 3 * KEEP_FINISHED
    for i in range(count):
        step = Step(id=f"m{i}", execution_id="e", name=f"s{i}", kind=StepKind.MARKER, parent_id="w",
                    index=i + 1)
        move_step(step, StepStatus.RUNNING)
        cache.apply([StepAdded(step.snapshot())])
        move_step(step, StepStatus.COMPLETED)
        cache.apply([StepFinished(step.snapshot())])
    opened = Step(id="open", execution_id="e", name="now", kind=StepKind.MARKER, parent_id="w", index=count + 1)
    move_step(opened, StepStatus.RUNNING)
    cache.apply([StepAdded(opened.snapshot())])
    entry = cache.get("e")
    assert entry is not None
    assert set(entry.steps) == {"w", "open", *(f"m{i}" for i in range(count - KEEP_FINISHED, count))}
    assert entry.steps[f"m{count - 1}"].status is StepStatus.COMPLETED


async def test_watchers_see_each_marker_steps_lines_closing_marker_included_before_its_end(tmp_path: Path) -> None:
    """What a watcher (the TUI, the WebSocket) is told of each step, in order: the step, then its
    lines (the STEP_COMPLETE line among them, under that step), then its end. Every step is stored
    with its lines, under an id that is a UUID (time-ordered: version 7)."""
    import uuid

    from engine.events import LinesLogged, StepFinished

    n = 300
    async with engine_at(tmp_path / "data") as engine:
        events = engine.subscribe(maxsize=1_000_000)
        execution = await submit_command(engine, pairs(n))
        done = await finished(engine, execution)
        assert done.status is ExecutionStatus.COMPLETED
        seen: dict[str, list[str]] = {}
        names: dict[str, str] = {}
        while (event := events.get_nowait()) is not None:
            if isinstance(event, StepAdded) and event.step.kind is StepKind.MARKER:
                names[event.step.id] = event.step.name
                seen[event.step.id] = []
            elif isinstance(event, LinesLogged) and event.step_id in seen:
                assert event.step_id is not None
                seen[event.step_id].extend(event.lines)
            elif isinstance(event, StepFinished) and event.step.id in seen:
                name = names[event.step.id]
                assert seen[event.step.id] == [f"STEP_START:{name}", f"line {name[1:]}", f"STEP_COMPLETE:{name}"]
        assert len(seen) == n
        steps = [s for s in await engine.get_steps(execution.id) if s.kind is StepKind.MARKER]
        assert [s.name for s in steps] == [f"s{i}" for i in range(n)]
        assert all(uuid.UUID(s.id).version == 7 for s in steps)
        lines = await engine.get_log_lines(execution.id, step_ids=[steps[-1].id])
        assert [line.text for line in lines] == [f"STEP_START:s{n - 1}", f"line {n - 1}", f"STEP_COMPLETE:s{n - 1}"]

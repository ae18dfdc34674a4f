"""Admission: executions beyond `max_running` wait queued (priority, then age), survive a restart,
can be cancelled before they start, and `stepflow ls` shows their place in the queue. Real engine,
real SQLite file, real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.engine import Engine, EngineConfig
from engine.events import ExecutionFinished, ExecutionStarted
from engine.model import Execution, ExecutionStatus, StepStatus
from stepflow_tui.cli.errors import EXIT_USAGE
from storage import SqliteStore
from storage.paths import database_path
from tests.engine_helpers import engine_at, finished, submit_command, submit_workflow
from tests.test_cli import ROOT, stepflow

pytestmark = [pytest.mark.timeout(180)]


def wait_for(path: Path) -> str:
    """A command that holds its slot until `path` exists."""
    return f"while [ ! -e {path} ]; do sleep 0.02; done"


async def starts_and_ends(engine: Engine, expected: int, timeout: float = 120) -> tuple[list[str], int]:
    """Follow the engine's events until `expected` executions finished: the order they started in
    and the most that ran at once."""
    subscription = engine.subscribe(maxsize=100_000)
    started: list[str] = []
    running: set[str] = set()
    most = 0
    ended = 0
    try:
        async with asyncio.timeout(timeout):
            async for event in subscription:
                if isinstance(event, ExecutionStarted):
                    started.append(event.execution_id)
                    running.add(event.execution_id)
                    most = max(most, len(running))
                elif isinstance(event, ExecutionFinished):
                    running.discard(event.execution_id)
                    ended += 1
                    if ended == expected:
                        break
    finally:
        subscription.close()
    return started, most


def queue_order(executions: list[Execution]) -> list[str]:
    return [e.id for e in sorted(executions, key=lambda e: (-e.priority, e.created_at))]


async def test_max_running_two_of_ten_higher_priority_first_fifo_within(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    async with engine_at(tmp_path / "data", max_running=2) as engine:
        follow = asyncio.create_task(starts_and_ends(engine, 10))
        await asyncio.sleep(0)  # subscribed before anything is submitted
        first = [await submit_command(engine, wait_for(gate), name=f"first-{i}") for i in range(2)]
        assert [e.status for e in first] == [ExecutionStatus.PENDING] * 2
        waiting = [await submit_command(engine, f"echo {i}", name=f"waiting-{i}", priority=i % 3)
                   for i in range(8)]
        assert all(e.admitted_at is None for e in waiting), "beyond max_running they wait"
        assert [engine.queue_place(e.id) for e in waiting] == [6, 3, 1, 7, 4, 2, 8, 5]
        gate.touch()
        started, most = await follow
        done = [await finished(engine, e) for e in first + waiting]
    assert most <= 2, f"{most} ran at once with max_running=2"
    assert started[:2] == [e.id for e in first]
    # priority 2 (2, 5), then 1 (1, 4, 7), then 0 (0, 3, 6), each in submission order
    assert started[2:] == [waiting[i].id for i in (2, 5, 1, 4, 7, 0, 3, 6)]
    assert all(e.status is ExecutionStatus.COMPLETED for e in done)
    assert all(e.admitted_at is not None for e in done)


async def test_a_restart_runs_all_100_queued_executions_in_priority_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with engine_at(data, max_running=0) as engine:
        queued = [await submit_command(engine, f"echo run {i}", name=f"job-{i}", priority=(i * 7) % 5)
                  for i in range(100)]
    # the engine stopped: nothing was cancelled, everything still waits in the store
    store = SqliteStore(database_path(data))
    await store.open()
    try:
        stored = [await store.get_execution(e.id) for e in queued]
    finally:
        await store.close()
    assert all(e is not None and e.status is ExecutionStatus.PENDING and e.admitted_at is None for e in stored)
    assert [e.priority for e in stored if e] == [e.priority for e in queued]

    engine = Engine(SqliteStore(database_path(data)), data, EngineConfig(max_running=1, shutdown_grace=5))
    # subscribed before start: the engine admits what it adopts as it starts
    follow = asyncio.create_task(starts_and_ends(engine, 100))
    await asyncio.sleep(0)
    await engine.start()
    try:
        started, most = await follow
        done = [await engine.wait(e.id) for e in queued]
        lines = [line.text for e in queued for line in await engine.get_log_lines(e.id)]
    finally:
        await engine.shutdown()
    assert most == 1
    assert started == queue_order(queued), "admitted by priority, then age"
    assert [e.status for e in done] == [ExecutionStatus.COMPLETED] * 100, "none lost"
    assert sorted(lines) == sorted(f"run {i}" for i in range(100))


async def test_two_engines_starting_at_once_run_each_queued_execution_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with engine_at(data, max_running=0) as engine:
        queued = [await submit_command(engine, f"echo run {i}", name=f"job-{i}") for i in range(20)]
    engines = [Engine(SqliteStore(database_path(data)), data, EngineConfig(max_running=4, shutdown_grace=5))
               for _ in range(2)]
    finished_ids: asyncio.Queue[str] = asyncio.Queue()

    async def follow(engine: Engine) -> None:
        async for event in engine.subscribe(maxsize=100_000):
            if isinstance(event, ExecutionFinished):
                finished_ids.put_nowait(event.execution_id)

    followers = [asyncio.create_task(follow(e)) for e in engines]
    await asyncio.sleep(0)  # subscribed before the engines start
    # both adopt what the first left queued at the same moment: the guarded take gives each to one
    await asyncio.gather(*(e.start() for e in engines))
    try:
        ended: list[str] = []
        async with asyncio.timeout(120):
            while len(ended) < 20:
                ended.append(await finished_ids.get())
        for engine in engines:
            await engine.writer.barrier()
        done = [await engines[0].store.get_execution(e.id) for e in queued]
        lines = [line.text for e in queued for line in await engines[0].get_log_lines(e.id)]
    finally:
        for task in followers:
            task.cancel()
        await asyncio.gather(*(e.shutdown() for e in engines))
    assert sorted(ended) == sorted(e.id for e in queued), "each ended once"
    assert [e.status if e else None for e in done] == [ExecutionStatus.COMPLETED] * 20
    assert sorted(lines) == sorted(f"run {i}" for i in range(20)), "each ran once, none twice"


async def test_a_queued_workflow_runs_after_a_restart_on_its_stored_steps(tmp_path: Path) -> None:
    data = tmp_path / "data"
    text = "name: wf\nsteps:\n  - {name: a, run: echo A}\n  - {name: b, run: echo B, needs: [a]}\n"
    async with engine_at(data, max_running=0) as engine:
        queued = await submit_workflow(engine, text=text, priority=3)
        before = {s.id: s.name for s in await engine.get_steps(queued.id)}
    async with engine_at(data, max_running=4) as engine:
        done = await finished(engine, queued)
        steps = await engine.get_steps(queued.id)
    assert done.status is ExecutionStatus.COMPLETED
    assert done.priority == 3
    assert {s.id: s.name for s in steps} == before, "the rows shown while it waited are the ones that ran"
    assert all(s.status is StepStatus.COMPLETED for s in steps)


async def test_a_queued_command_with_secret_values_fails_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with engine_at(data, max_running=0) as engine:
        queued = await submit_command(engine, "echo $TOKEN", env={"TOKEN": "hunter2-xyz"}, secrets=["TOKEN"])
    async with engine_at(data) as engine:
        done = await finished(engine, queued)
    assert done.status is ExecutionStatus.FAILED
    assert "submit it again" in (done.error_message or "")
    assert "hunter2-xyz" not in str(done)


async def test_cancelling_a_queued_execution_ends_it_without_running_it(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    witness = tmp_path / "ran"
    async with engine_at(tmp_path / "data", max_running=1) as engine:
        blocker = await submit_command(engine, wait_for(gate))
        subscription = engine.subscribe()
        queued = await submit_command(engine, f"touch {witness}", name="never")
        after = await submit_command(engine, "echo after")
        assert engine.queue_place(after.id) == 2
        await engine.cancel(queued.id)
        async with asyncio.timeout(10):
            async for event in subscription:
                if isinstance(event, ExecutionFinished) and event.execution_id == queued.id:
                    break
        subscription.close()
        assert engine.queue_place(after.id) == 1
        cancelled = await engine.wait(queued.id)
        stored = await engine.store.get_execution(queued.id)
        steps = await engine.store.get_steps(queued.id)
        gate.touch()
        assert (await finished(engine, blocker)).status is ExecutionStatus.COMPLETED
        assert (await finished(engine, after)).status is ExecutionStatus.COMPLETED
    assert cancelled.status is ExecutionStatus.CANCELLED
    assert stored is not None and stored.status is ExecutionStatus.CANCELLED
    assert all(s.status is StepStatus.CANCELLED for s in steps)
    assert not witness.exists(), "a cancelled queued execution ran nothing"


async def test_stepflow_ls_shows_queue_places(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with engine_at(data, max_running=0) as engine:
        low = await submit_command(engine, "echo low", name="low-one")
        high = await submit_command(engine, "echo high", name="high-one", priority=5)
        low_later = await submit_command(engine, "echo low later", name="low-two")
        # read by another process while this engine holds the queue
        result = await asyncio.to_thread(stepflow, data, "ls")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[2]: line for line in result.stdout.splitlines()[1:]}
    assert "queued #1" in rows["high-one"]
    assert "queued #2" in rows["low-one"]
    assert "queued #3" in rows["low-two"]
    assert {low.id, high.id, low_later.id} <= {line.split()[1] for line in result.stdout.splitlines()[1:]}


def test_stepflow_max_running_is_checked_and_a_one_shot_exec_still_runs(tmp_path: Path) -> None:
    def exec_with(value: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path), "STEPFLOW_MAX_RUNNING": value}
        return subprocess.run([sys.executable, "-m", "stepflow.main", "exec", "--plain", "--", "echo", "hi"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    bad = exec_with("lots")
    assert bad.returncode == EXIT_USAGE
    assert "STEPFLOW_MAX_RUNNING" in bad.stderr
    # nothing would ever start in an engine of capacity 0: exec's own one runs all the same
    paused = exec_with("0")
    assert paused.returncode == 0, paused.stderr
    assert "hi" in paused.stdout


async def test_a_queued_execution_is_taken_by_one_of_two_stores_at_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with engine_at(data, max_running=0) as engine:
        queued = [await submit_command(engine, f"echo {i}") for i in range(50)]
    stores = [SqliteStore(database_path(data)) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        # released at shutdown: no owner; each of two engines tries to take every one at once
        taken = await asyncio.gather(*(store.take_queued(e.id, f"engine-{n}", None)
                                       for e in queued for n, store in enumerate(stores)))
        owners = [await stores[0].get_execution(e.id) for e in queued]
    finally:
        for store in stores:
            await store.close()
    assert taken.count(True) == 50, "each taken exactly once"
    assert [taken[2 * i] != taken[2 * i + 1] for i in range(50)] == [True] * 50
    assert all(e is not None and e.owner in ("engine-0", "engine-1") for e in owners)


async def test_an_admission_group_runs_its_limit_at_once_and_holds_the_rest(tmp_path: Path) -> None:
    from engine.admission import GROUP_LABEL

    gate = tmp_path / "gate"
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    group = {GROUP_LABEL: "runner-a"}
    async with engine_at(tmp_path / "data") as engine:
        held = await submit_command(engine, "echo held", labels=group)  # no limit set yet: it waits
        other = await finished(engine, await submit_command(engine, "echo ungrouped"))
        assert other.status is ExecutionStatus.COMPLETED
        assert (await engine.get_execution(held.id)).status is ExecutionStatus.PENDING
        engine.set_group_limit("runner-a", 1)
        first_done = await finished(engine, held)
        assert first_done.status is ExecutionStatus.COMPLETED
        running = await submit_command(engine, wait, labels=group)
        queued = await submit_command(engine, "echo second", labels=group)
        assert engine.queue_place(queued.id) == 1 and engine.group_running("runner-a") == 1
        engine.set_group_limit("runner-a", 0)  # stopped: what runs finishes, the queue is kept
        gate.touch()
        assert (await finished(engine, running)).status is ExecutionStatus.COMPLETED
        assert engine.queue_place(queued.id) == 1
        engine.set_group_limit("runner-a", 1)
        assert (await finished(engine, queued)).status is ExecutionStatus.COMPLETED


async def test_a_grouped_execution_queued_before_a_restart_waits_for_its_group(tmp_path: Path) -> None:
    from engine.admission import GROUP_LABEL

    data = tmp_path / "data"
    async with engine_at(data) as engine:
        queued = await submit_command(engine, "echo later", labels={GROUP_LABEL: "stopped-runner"})
    async with engine_at(data) as engine:
        assert engine.queue_place(queued.id) == 1  # adopted, not started: its group is not open here
        engine.set_group_limit("stopped-runner", 2)
        assert (await finished(engine, queued)).status is ExecutionStatus.COMPLETED

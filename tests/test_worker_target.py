"""The `worker` target (engine.runners.worker): a workflow's steps wait for a worker of their pool,
which claims them, streams their output and reports their exit; the engine keeps the execution.
Real engine on a SQLite file; the worker's side called as the API's routes call it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.errors import NotFound
from engine.job_live import OutputGap, OutputPiece
from engine.model import ExecutionStatus, Stream
from engine.runners.worker import CommandGone, WorkerPool
from engine.workflow.load import parse_workflow
from tests.engine_helpers import all_text, by_name, engine_at, finished, submit_workflow

WORKFLOW = """
name: on a worker
targets:
  w: {type: worker, pool: ci}
runs_on: w
defaults: {shell: sh}
env: {GREETING: hello}
steps:
  - name: first
    run: echo first
  - name: second
    run: echo second
    needs: [first]
"""


async def claimed(pool: WorkerPool, worker: str = "w1"):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(10):
        while (command := await pool.claim("ci", worker, 5)) is None:
            pass
    return command


async def test_steps_wait_for_a_worker_and_its_output_is_taken_once(tmp_path: Path) -> None:
    async with engine_at(tmp_path / "data") as engine:
        execution = await submit_workflow(engine, text=WORKFLOW)
        first = await claimed(engine.workers)
        assert first.description()["script"] == "echo first" and first.description()["shell"] == "sh"
        assert first.description()["env"]["GREETING"] == "hello"
        assert await engine.workers.claim("ci", "w2", 0) is None  # the second waits for the first
        await first.take("w1", [OutputPiece(Stream.STDOUT, 0, "STEP_START:inner\nfirst\n")])
        await first.take("w1", [OutputPiece(Stream.STDOUT, 0, "STEP_START:inner\nfirst\n")])  # sent again
        with pytest.raises(OutputGap):
            await first.take("w1", [OutputPiece(Stream.STDOUT, 999, "lost\n")])
        with pytest.raises(CommandGone):
            await first.take("w2", [OutputPiece(Stream.STDOUT, 22, "not yours\n")])
        await first.finish("w1", 0, "STEP_START:inner\nfirst\nSTEP_COMPLETE:inner\n")
        second = await claimed(engine.workers, "w2")
        await second.finish("w2", 0, "second\n")
        done = await finished(engine, execution)
        assert done.status is ExecutionStatus.COMPLETED
        text = await all_text(engine, execution.id)
        assert text.count("first") == 1 and "second" in text
        steps = by_name(await engine.get_steps(execution.id))
        assert steps["inner"].status.value == "completed"
        with pytest.raises((CommandGone, NotFound)):
            engine.workers.heartbeat("ci", second.id, "w2")  # over: its worker is told


async def test_a_cancelled_step_is_refused_to_its_worker_and_a_silent_one_is_given_up(tmp_path: Path) -> None:
    async with engine_at(tmp_path / "data") as engine:
        engine.workers.stale_after = 0.5
        execution = await submit_workflow(engine, text=WORKFLOW)
        first = await claimed(engine.workers)
        await engine.cancel(execution.id)
        assert (await finished(engine, execution)).status is ExecutionStatus.CANCELLED
        with pytest.raises((CommandGone, NotFound)):
            engine.workers.heartbeat("ci", first.id, "w1")

        again = await submit_workflow(engine, text=WORKFLOW.replace("    needs: [first]\n", "    needs: [first]\n"
                                                                     "    retries: 1\n"))
        doomed = await claimed(engine.workers)
        await doomed.finish("w1", 0, "first\n")
        silent = await claimed(engine.workers)  # then its worker dies: no heartbeat
        retried = await claimed(engine.workers, "w2")  # given up, it waits again; another worker takes it
        assert retried.id != silent.id and retried.spec.script == "echo second"
        last = engine.workers.last_heartbeat("ci")
        assert last is not None and last[0] == "w2"
        await retried.finish("w2", 0, "second\n")
        done = await finished(engine, again)
        assert done.status is ExecutionStatus.COMPLETED
        assert any("no heartbeat from worker w1" in t for t in await all_text(engine, again.id))


def test_a_worker_target_is_read_from_a_workflow_file() -> None:
    workflow = parse_workflow(WORKFLOW, "w.yaml")
    assert workflow.targets["w"].type == "worker"

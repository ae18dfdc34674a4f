"""What subscribers hear of a command's marker steps, event by event: the TUI, the API's WebSockets
and the store build the steps and their logs from these (issue 16, goal 4: the pump applies the
usual markers without coroutines; the events must not change)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from engine.events import (
    ExecutionFinished,
    LinesLogged,
    StepAdded,
    StepFinished,
    lines_logged,
    step_added,
    step_finished,
)
from engine.model import StepKind, StepStatus, Stream, utcnow
from tests.engine_helpers import engine_at, submit_command

SCRIPT = r"printf 'pre\nSTEP_START:a\nin a\nSTEP_COMPLETE:a\nSTEP_START:b\nin b\nSTEP_START:c\nSTEP_ERROR:bad\nafter\n'"


async def test_marker_steps_are_heard_opened_with_their_lines_then_closed_in_output_order(tmp_path: Path) -> None:
    async with engine_at(tmp_path) as engine:
        sub = engine.subscribe()
        ex = await submit_command(engine, SCRIPT)
        heard: list[tuple[object, ...]] = []
        names: dict[str, str] = {}
        async with asyncio.timeout(20):
            async for event in sub:
                if isinstance(event, ExecutionFinished) and event.execution_id == ex.id:
                    break
                if isinstance(event, StepAdded) and event.step.execution_id == ex.id:
                    step = event.step
                    names[step.id] = step.name
                    assert step.kind is StepKind.MARKER and step.started_at is not None
                    assert uuid.UUID(step.id).version == 7
                    heard.append(("added", step.name, step.status))
                elif isinstance(event, StepFinished) and event.step.id in names:
                    heard.append(("finished", event.step.name, event.step.status, event.step.error_message))
                elif isinstance(event, LinesLogged) and event.exec_id == ex.id and event.stream is Stream.STDOUT:
                    step_name = names.get(event.step_id or "", "command")
                    if heard and heard[-1][:2] == ("lines", step_name):
                        # the output read in two pieces: a step's lines in two events
                        heard[-1][2].extend(event.lines)  # type: ignore[attr-defined]
                    else:
                        heard.append(("lines", step_name, list(event.lines)))
    running, completed, failed = StepStatus.RUNNING, StepStatus.COMPLETED, StepStatus.FAILED
    assert heard == [
        ("lines", "command", ["pre"]),
        ("added", "a", running),
        ("lines", "a", ["STEP_START:a", "in a", "STEP_COMPLETE:a"]),
        ("finished", "a", completed, None),
        ("added", "b", running),
        ("lines", "b", ["STEP_START:b", "in b"]),
        ("finished", "b", completed, None),
        ("added", "c", running),
        ("lines", "c", ["STEP_START:c"]),
        ("finished", "c", failed, "bad"),
        ("lines", "c", ["STEP_ERROR:bad"]),
        ("lines", "command", ["after"]),
    ]
    ids = list(names)
    assert ids == sorted(ids), "marker step ids are time-ordered"


def test_the_engines_quick_made_events_are_the_events_themselves() -> None:
    now = utcnow()
    assert lines_logged("e", "s", Stream.STDOUT, 3, now, ("a", "b")) == LinesLogged(
        "e", "s", Stream.STDOUT, 3, now, ("a", "b"))
    assert step_added(None) == StepAdded(None)  # type: ignore[arg-type]
    assert step_finished(None) == StepFinished(None)  # type: ignore[arg-type]
    assert type(step_finished(None)) is StepFinished  # type: ignore[arg-type]


def test_marker_steps_count_in_the_progress_as_any_running_then_completed_step() -> None:
    """The pump's short ways (`WorkTally.started` for a new running marker step, `completed` for
    its usual close) count as the general `count` does."""
    from engine.execution.transitions import move_step
    from engine.model import ExecutionStatus, Step
    from engine.progress import WorkTally

    counted, short = WorkTally(), WorkTally()
    steps = [Step(id=f"s{i}", execution_id="e", name=f"s{i}", kind=StepKind.MARKER) for i in range(4)]
    for step in steps:
        move_step(step, StepStatus.RUNNING)
        counted.count(step)
        short.started(step)
    for tally in (counted, short):
        assert (tally.work_total, tally.work_completed, tally.percentage(ExecutionStatus.RUNNING)) == (4, 0, 0.0)
    for step in steps[:3]:
        move_step(step, StepStatus.COMPLETED)
        counted.count(step)
        short.completed(step)
    for tally in (counted, short):
        assert (tally.work_total, tally.work_completed, tally.percentage(ExecutionStatus.RUNNING)) == (4, 3, 75.0)


def test_marker_step_ids_of_one_millisecond_count_up_across_their_last_two_digits() -> None:
    import time

    from engine.execution.state import _marker_step_id_at

    ms = time.time_ns() // 1_000_000 + 1_000  # ahead of the ids made so far (a clock back keeps its ms)
    ids = [_marker_step_id_at(ms) for _ in range(600)]  # at least two carries out of the last byte
    counters = [int(step_id[-12:], 16) for step_id in ids]
    assert counters == list(range(counters[0], counters[0] + 600))
    assert len({step_id[:-12] for step_id in ids}) == 1
    assert all(uuid.UUID(step_id).version == 7 and len(step_id) == 36 for step_id in ids)
    later = _marker_step_id_at(ms + 1)
    assert later > ids[-1] and later[:13] != ids[-1][:13]


async def test_a_block_of_held_events_goes_to_the_store_writer_with_its_log_lines_counted() -> None:
    from engine.events import LinesLogged
    from engine.execution.state import ExecutionState
    from engine.hub import Bundle, Hub
    from engine.masking import Masker
    from engine.model import Execution, Step

    hub = Hub()
    branch = Step(id="b", execution_id="e", name="local", kind=StepKind.BRANCH)
    state = ExecutionState(Execution(id="e", name="x"), [branch], hub, Masker(), first_seq=7)
    await state.log_lines(branch.id, Stream.STDOUT, ["before the block"])  # not held: not in a bundle
    bundles: list[Bundle] = []
    for sizes in ((3, 0, 2), (1,), ()):
        assert state.hold()
        for size in sizes:
            step = state.add_held_marker_step(branch, "s", False, None, {})
            state.log_held_lines(step.id, Stream.STDOUT, [f"line {n}" for n in range(size)])
            await state.spill()
            state.log_held_lines(branch.id, Stream.STDERR, ["after"])
        await state.release()
    while not hub.sink.empty():
        item = hub.sink.get_nowait()
        if isinstance(item, Bundle):
            bundles.append(item)
    assert [b.lines for b in bundles] == [
        sum(len(e.lines) for e in b if isinstance(e, LinesLogged)) for b in bundles
    ] == [3, 1, 3, 1, 1, 1]


async def test_a_subscriber_takes_a_block_whole_when_it_has_room_and_drops_only_lines_when_full() -> None:
    from engine.events import LinesDropped
    from engine.hub import Hub

    hub = Hub()
    sub = hub.subscribe(maxsize=4)
    now = utcnow()
    lines = [lines_logged("e", "s", Stream.STDOUT, seq, now, ("a", "b")) for seq in (0, 2)]
    block = [step_added(None), lines[0], step_finished(None)]  # type: ignore[arg-type]
    sub.offer_many(block)  # room for all three
    sub.offer_many([*lines, block[2]])  # room for one: the second lines are dropped, not the step's end
    assert sub.dropped_total == 2
    got = [await asyncio.wait_for(sub.__anext__(), 1) for _ in range(6)]
    # the loss is told once the queue is half empty again
    assert got == [*block, lines[0], LinesDropped("e", 2), block[2]]

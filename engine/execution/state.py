"""The live state of one execution, and the only place that changes it and publishes the events.

Everything that runs for an execution (its branches, steps, command pumps) goes through this object,
so each change is applied with the transition tables and published exactly once.

It holds the steps a run still needs: its branches and workflow steps, and the marker steps that are
open. A finished marker step leaves once the store holds it (a command may print millions of them);
readers of a live execution's steps merge the store's with these (`Engine.get_steps`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.events import (
    Event,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
    LinesLogged,
    Notice,
    StepAdded,
    StepFinished,
    StepStarted,
    StepUpdated,
    lines_logged,
    step_added,
    step_finished,
)
from engine.execution.transitions import STEP_TRANSITIONS, can_move_step, move_execution, move_step
from engine.masking import Masker
from engine.model import (
    TERMINAL_STEP,
    AbortReason,
    Execution,
    ExecutionStatus,
    Step,
    StepKind,
    StepStatus,
    Stream,
    utcnow,
)
from engine.progress import WorkTally

if TYPE_CHECKING:
    from datetime import datetime

    from engine.hub import Hub

log = logging.getLogger(__name__)

#: finished marker steps that wait for the store together before leaving the live state: one
#: barrier in the store writer's queue per this many, so a steady stream of steps costs it little
FORGET_BATCH = 256

#: events held (see `ExecutionState.hold`) at most: then they go, and holding goes on
HOLD_AT_MOST = 1_024

#: ids of marker steps: time-ordered UUIDs (version 7, RFC 9562: milliseconds since the epoch, then
#: random bits from a generator seeded by the OS). A command printing markers makes thousands of steps
#: a second, and each id goes into the steps' unique index: ids that follow each other land side by
#: side at its end, where random ones (version 4) landed all over it, which doubled SQLite's work per
#: step. `uuid4()` also asked the OS for every id. Step ids are names, not secrets.
#:
#: The ids of one millisecond share their first 74 bits (its time, then 26 random bits drawn once for
#: it); their last 48 bits are a counter that starts at a random value below 2**47 and goes up by one
#: an id (RFC 9562 6.2, a counter in the random bits: unique and in order within the process, a
#: third of the work of drawing and formatting 128 bits an id). A clock that goes back keeps the
#: millisecond it was at, so the ids stay in order.
_marker_ids = random.Random(os.urandom(32))
_id_ms = -1
#: the id's text up to its counter: "tttttttt-tttt-7aaa-vbbb-" (time, version, random, variant+random)
_id_prefix = ""
#: the same and the counter's hex digits but its last two, which `_LOW_DIGITS` gives: the counter is
#: formatted once every 256 ids (formatting it each time was ~0.1 us an id)
_id_head = ""
_LOW_DIGITS = tuple(f"{low:02x}" for low in range(256))
_id_counter = 0
_COUNTER_START = 1 << 47
_COUNTER_END = 1 << 48


def _marker_step_id() -> str:
    return _marker_step_id_at(time.time_ns() // 1_000_000)


def _marker_step_id_at(ms: int) -> str:
    """`_marker_step_id` at `ms` milliseconds since the epoch (a block of output's one clock reading)."""
    global _id_ms, _id_prefix, _id_head, _id_counter
    counter = _id_counter + 1
    if ms > _id_ms or counter >= _COUNTER_END:
        ms = max(ms, _id_ms + 1)
        bits = _marker_ids.getrandbits(26 + 47)
        _id_ms = ms
        _id_prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{bits >> 61:03x}-{0x8000 | (bits >> 47) & 0x3FFF:04x}-"
        counter = bits & (_COUNTER_START - 1)
        _id_head = f"{_id_prefix}{counter >> 8:010x}"
    elif not counter & 0xFF:
        _id_head = f"{_id_prefix}{counter >> 8:010x}"
    _id_counter = counter
    return _id_head + _LOW_DIGITS[counter & 0xFF]


#: bound once: each look-up through the enum class costs ~0.1 us (EnumType.__getattr__)
_MARKER = StepKind.MARKER
_RUNNING = StepStatus.RUNNING
_COMPLETED = StepStatus.COMPLETED


class ExecutionState:
    def __init__(self, execution: Execution, steps: Sequence[Step], hub: Hub, masker: Masker, *,
                 first_seq: int = 0) -> None:
        """`first_seq`: the number of its next log line (0 unless it logged before: a job's report)."""
        self.execution = execution
        self.steps: dict[str, Step] = {s.id: s for s in steps}
        self.hub = hub
        self.masker = masker
        self._next_seq = first_seq
        self._next_index = max((s.index for s in steps), default=-1) + 1
        #: set when the execution is asked to stop; running commands are terminated
        self.stop_reason: AbortReason | None = None
        self.stop_message: str | None = None
        self.stopping = asyncio.Event()
        #: called once when the execution is asked to stop (see `on_stop`)
        self._stop_callbacks: set[Callable[[], None]] = set()
        self._last_counters: tuple[int, int, int | None, float] | None = None
        #: the execution's counters and progress, kept up to date as steps move
        self._work = WorkTally(steps)
        #: ids of finished marker steps not yet known to be in the store
        self._finished_markers: list[str] = []
        #: resolved by the store writer once it wrote what came before (see `forget_stored`)
        self._stored: asyncio.Future[None] | None = None
        #: events held back while a block of output is applied (see `hold`)
        self._held: list[Event] | None = None
        #: while events are held: when the block was read, the time of all that it does (its
        #: lines, the steps it starts and ends), one clock reading instead of three a marker pair
        self._held_at: datetime | None = None
        #: the same, in milliseconds since the epoch (for the ids of the steps the block adds)
        self._held_ms = 0
        #: `_next_seq` when the events held now began: the log lines among them are those after
        self._held_seq = first_seq

    # -- publishing -----------------------------------------------------------------------
    def hold(self) -> bool:
        """Hold the events published from now on until `release`, which publishes them together
        (one item of the store writer's queue; subscribers hear of them then). For a block of a
        command's output: its markers make several events each. Returns False when they already
        were held (the release is someone else's). Whoever holds must not wait on anything else
        before releasing: held events are not yet on their way to the store."""
        if self._held is not None:
            return False
        self._held = []
        self._held_seq = self._next_seq
        self._held_at = utcnow()
        self._held_ms = time.time_ns() // 1_000_000
        return True

    async def release(self) -> None:
        held, self._held = self._held, None
        self._held_at = None
        if held:
            await self.hub.publish_many(held, self._held_lines())

    def _held_lines(self) -> int:
        """The log lines among the events held (each LinesLogged took its numbers from
        `_next_seq`), counted from now on again."""
        lines = self._next_seq - self._held_seq
        self._held_seq = self._next_seq
        return lines

    def holding(self) -> bool:
        """Events are held (see `hold`): the `*_held` methods may be used."""
        return self._held is not None

    def spill_due(self) -> bool:
        """As many events are held as should go at once (see `spill`)."""
        held = self._held
        return held is not None and len(held) >= HOLD_AT_MOST

    async def spill(self) -> None:
        """Publish the events held so far, and go on holding."""
        held = self._held
        if held:
            self._held = []
            await self.hub.publish_many(held, self._held_lines())

    async def _publish(self, event: Event) -> None:
        held = self._held
        if held is None:
            await self.hub.publish(event)
            return
        held.append(event)
        if len(held) >= HOLD_AT_MOST:  # the store writer's queue holds about as many
            self._held = []
            await self.hub.publish_many(held, self._held_lines())

    # -- steps ----------------------------------------------------------------------------
    async def add_marker_step(
        self,
        parent: Step,
        name: str,
        *,
        stop_on_error: bool = False,
        estimated_duration: float | None = None,
        metadata: dict[str, Any] | None = None,
        counters: bool = True,
    ) -> Step:
        """A marker step, running. `counters=False`: the execution's counters are published later,
        by the caller's `counters_changed` (a command's pump does so once per block of output)."""
        now = self._held_at
        if now is None:
            now, ms = utcnow(), time.time_ns() // 1_000_000
        else:
            ms = self._held_ms
        step, running = self._new_marker_step(
            parent, name, stop_on_error, estimated_duration, dict(metadata) if metadata else {}, now, ms
        )
        await self._publish(StepAdded(running))
        if counters:
            await self.counters_changed()
        return step

    def add_held_marker_step(
        self,
        parent: Step,
        name: str,
        stop_on_error: bool,
        estimated_duration: float | None,
        metadata: dict[str, Any],
    ) -> Step:
        """`add_marker_step(counters=False)` while events are held (`holding`), without a coroutine:
        its event joins the held ones, which the caller publishes when `spill_due`. The step takes
        `metadata` as it is (not a copy)."""
        held = self._held
        assert held is not None and self._held_at is not None, "events are not held"
        step, running = self._new_marker_step(
            parent, name, stop_on_error, estimated_duration, metadata, self._held_at, self._held_ms
        )
        held.append(step_added(running))
        return step

    def _new_marker_step(
        self,
        parent: Step,
        name: str,
        stop_on_error: bool,
        estimated_duration: float | None,
        metadata: dict[str, Any],
        now: datetime,
        ms: int,
    ) -> tuple[Step, Step]:
        """A new marker step, running since `now` (its id made at `ms`, the same time in
        milliseconds), and a copy of it as it is now (`snapshot`, for its StepAdded)."""
        index = self._next_index  # _take_index, spelt out
        self._next_index = index + 1
        step_id = _marker_step_id_at(ms)
        execution_id = self.execution.id
        parent_id = parent.id
        target = parent.target
        # by position, in the order of Step's fields (a third of the work of naming them), running
        # from the start (what `move_step` to RUNNING does to a new step); its snapshot made the same
        # way, not copied from it (a look-up of each field fewer)
        step = Step(
            step_id,  # id
            execution_id,
            name,
            _MARKER,  # kind
            parent_id,
            index,
            "",  # description
            _RUNNING,  # status
            None,  # exit_code
            None,  # error_message
            None,  # abort_reason
            now,  # created_at
            now,  # started_at
            None,  # completed_at
            estimated_duration,
            stop_on_error,
            None,  # progress
            metadata,
            target,
        )
        running = Step(
            step_id, execution_id, name, _MARKER, parent_id, index, "", _RUNNING, None, None, None, now, now,
            None, estimated_duration, stop_on_error, None, dict(metadata), target,
        )
        self.steps[step_id] = step
        self._work.started(step)  # new, running, no progress
        self.execution.current_step_index = index
        return step, running

    def _take_index(self) -> int:
        index = self._next_index
        self._next_index += 1
        return index

    async def start_step(self, step: Step) -> None:
        if step.status is not StepStatus.PENDING:
            return
        move_step(step, StepStatus.RUNNING)
        if step.kind is not StepKind.BRANCH:
            self.execution.current_step_index = step.index
        await self._publish(StepStarted(step.snapshot()))

    async def finish_step(
        self,
        step: Step,
        status: StepStatus,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        reason: AbortReason | None = None,
        counters: bool = True,
    ) -> None:
        if not can_move_step(step, status):
            return
        if error is not None:
            error = self.masker.mask(error)
        move_step(step, status, exit_code=exit_code, error=error, reason=reason, at=self._held_at)
        self._work.count(step)
        # a finished marker step changes no more (its command's pump let it go; it leaves the live
        # state once stored): the event may carry the step itself, a copy fewer for each of the
        # thousands a second a command printing markers makes
        marker_done = step.kind is StepKind.MARKER and status in TERMINAL_STEP
        await self._publish(StepFinished(step if marker_done else step.snapshot()))
        if counters:
            await self.counters_changed()
        if marker_done and self._marker_finished(step):
            await self.forget_stored()

    def finish_held_marker_step(
        self, step: Step, status: StepStatus, exit_code: int | None, error: str | None
    ) -> bool:
        """`finish_step(counters=False)` of a marker step while events are held (`holding`), to a
        terminal status, without a coroutine: its event joins the held ones, which the caller
        publishes when `spill_due`. True when the finished marker steps are due to leave the live
        state: the caller then awaits `forget_stored`."""
        held = self._held
        assert held is not None, "events are not held"
        if status is _COMPLETED and error is None and step.status is _RUNNING:
            # the usual close (STEP_TRANSITIONS allows it): move_step and WorkTally.count spelt out
            step.status = _COMPLETED
            step.completed_at = self._held_at
            if exit_code is not None:
                step.exit_code = exit_code
            if step.progress is not None:
                step.progress = 100.0
            self._work.completed(step)
        else:
            if step.status not in STEP_TRANSITIONS[status]:
                return False
            if error is not None:
                error = self.masker.mask(error)
            move_step(step, status, exit_code=exit_code, error=error, at=self._held_at)
            self._work.count(step)
        # as in finish_step: the event carries the step itself
        held.append(step_finished(step))
        return self._marker_finished(step)

    def _marker_finished(self, step: Step) -> bool:
        """Note a finished marker step, to leave the live state once stored; True when those
        noted are due to leave (`forget_stored`)."""
        finished = self._finished_markers
        finished.append(step.id)
        return len(finished) >= FORGET_BATCH and self._stored is None

    async def forget_stored(self) -> None:
        """Drop the finished marker steps from `steps` once the store holds them: a barrier goes
        into the store writer's queue behind their StepFinished events, and resolves when those
        are written. Nothing waits for it here; the steps leave when it resolves."""
        was_held = self._held is not None
        await self.release()  # the barrier goes behind their StepFinished events
        ids, self._finished_markers = self._finished_markers, []
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stored = stored

        def forget(_done: asyncio.Future[None]) -> None:
            self._stored = None
            for step_id in ids:
                self.steps.pop(step_id, None)

        stored.add_done_callback(forget)
        await self.hub.sink.put(stored)
        if was_held:
            self.hold()

    async def update_step(self, step: Step) -> None:
        await self._publish(StepUpdated(step.snapshot()))
        # its progress may move the execution's; the counters are redone (and published) only when
        # that moves by a tenth of a percent: STEP_PROGRESS:i/N for each of N items is N updates
        work = self._work
        if work.count(step) and work.percentage(self.execution.status) != self.execution.progress_percentage:
            await self.counters_changed()

    async def close_open_children(
        self, parent_id: str, status: StepStatus, reason: AbortReason | None
    ) -> None:
        """Finish every still-open step below `parent_id` (deepest first)."""
        for step in sorted(self.steps.values(), key=lambda s: s.index, reverse=True):
            if step.status.is_terminal or step.id == parent_id:
                continue
            if self._is_below(step, parent_id):
                to = status
                if step.status is StepStatus.PENDING and status is not StepStatus.CANCELLED:
                    to = StepStatus.SKIPPED
                await self.finish_step(step, to, reason=reason)

    def _is_below(self, step: Step, ancestor_id: str) -> bool:
        parent = step.parent_id
        while parent is not None:
            if parent == ancestor_id:
                return True
            parent = self.steps[parent].parent_id if parent in self.steps else None
        return False

    # -- log lines ------------------------------------------------------------------------
    async def log_lines(self, step_id: str | None, stream: Stream, lines: Sequence[str]) -> None:
        if lines:
            await self._publish(self._lines_logged(step_id, stream, lines))

    def log_held_lines(self, step_id: str | None, stream: Stream, lines: Sequence[str]) -> None:
        """`log_lines` while events are held (`holding`), without a coroutine: the event joins the
        held ones, which the caller publishes when `spill_due`."""
        held = self._held
        assert held is not None, "events are not held"
        if lines:
            held.append(self._lines_logged(step_id, stream, lines))

    def _lines_logged(self, step_id: str | None, stream: Stream, lines: Sequence[str]) -> LinesLogged:
        """The event of `lines` (masked), numbered from the execution's next line."""
        if self.masker:
            lines = [self.masker.mask(line) for line in lines]
        start = self._next_seq
        self._next_seq += len(lines)
        return lines_logged(self.execution.id, step_id, stream, start, self._held_at or utcnow(), tuple(lines))

    async def system_line(self, step_id: str | None, text: str) -> None:
        await self.log_lines(step_id, Stream.SYSTEM, [text])

    async def notice(self, step_id: str | None, level: str, message: str, **extra: str) -> None:
        await self._publish(
            Notice(
                exec_id=self.execution.id,
                step_id=step_id,
                level=level,
                message=self.masker.mask(message),
                extra=extra,
            )
        )

    # -- the execution itself -------------------------------------------------------------
    async def start(self) -> None:
        move_execution(self.execution, ExecutionStatus.RUNNING)
        await self._publish(ExecutionStarted(self.execution.snapshot()))

    async def finish(
        self,
        status: ExecutionStatus,
        *,
        exit_code: int | None = None,
        error: str | None = None,
        reason: AbortReason | None = None,
    ) -> None:
        if self.execution.status.is_terminal:
            return
        if error is not None:
            error = self.masker.mask(error)
        move_execution(self.execution, status, exit_code=exit_code, error=error, reason=reason)
        self._recount()
        await self.release()
        await self.hub.publish_stored(ExecutionFinished(self.execution.snapshot()))

    def request_stop(self, reason: AbortReason, message: str | None = None) -> bool:
        """Mark the execution as stopping; returns False if it already was."""
        if self.stop_reason is not None:
            return False
        self.stop_reason = reason
        self.stop_message = message
        self.stopping.set()
        callbacks, self._stop_callbacks = self._stop_callbacks, set()
        for callback in callbacks:
            callback()
        return True

    def on_stop(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` when the execution is asked to stop (soon, if it already was); returns
        what forgets it. A callback rather than a task waiting on `stopping`: every command
        watches for the stop, and a task each cost more than running a short command."""
        if self.stopping.is_set():
            handle = asyncio.get_running_loop().call_soon(callback)
            return handle.cancel
        self._stop_callbacks.add(callback)
        return lambda: self._stop_callbacks.discard(callback)

    def _recount(self) -> None:
        ex = self.execution
        ex.total_steps = self._work.work_total
        ex.completed_steps = self._work.work_completed
        ex.progress_percentage = self._work.percentage(ex.status)

    async def counters_changed(self) -> None:
        """Publish the execution's counters and progress if they moved since last published."""
        self._recount()
        ex = self.execution
        counters = (ex.total_steps, ex.completed_steps, ex.current_step_index, ex.progress_percentage)
        if counters != self._last_counters:
            self._last_counters = counters
            await self._publish(ExecutionUpdated(ex.snapshot()))

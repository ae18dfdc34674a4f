"""Running one command under a node of the tree: output → lines → markers → steps, logs, artifacts.

The pump reads the command's output until both streams close, so whatever the command prints while
it is being stopped (its cleanup messages) is kept too. Cancellation and timeouts terminate the
process group; the pump then drains what is left and reports the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from engine.artifacts import ArtifactStore
from engine.events import ArtifactAdded
from engine.execution import marker_tree as mt
from engine.execution.state import ExecutionState
from engine.lines import LineSplitter
from engine.markers import MarkerParser, StepClosed
from engine.masking import Masker
from engine.model import AbortReason, Step, StepStatus, Stream, new_id
from engine.runners.base import CommandSpec, FetchError, ResourceSample, Runner, RunningCommand, SpawnError

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 1.0
#: seconds into a command at which its resources are first read (psutil primed). Most steps are
#: over by then, and priming at the start cost each a scan of /proc for the process tree.
PRIME_DELAY = 0.1
#: seconds a command's leftover background processes may hold its output open after it exits
LEFTOVER_GRACE = 5.0


@dataclass(slots=True)
class CommandOutcome:
    exit_code: int | None
    #: why it ended early, if it did
    reason: AbortReason | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None and self.exit_code == 0


class CommandPump:
    def __init__(
        self,
        state: ExecutionState,
        owner: Step,
        runner: Runner,
        spec: CommandSpec,
        artifacts: ArtifactStore,
        *,
        lenient_markers: bool = False,
        kill_grace: float = 10.0,
    ) -> None:
        self.state = state
        self.owner = owner
        self.runner = runner
        self.spec = spec
        self.artifacts = artifacts
        self.kill_grace = kill_grace
        self.lenient = lenient_markers
        self._parser = MarkerParser(lenient=lenient_markers)
        self._tree = mt.MarkerTree()
        #: the marker steps open in the output, by the tree's local id (closed ones leave: a
        #: command may print millions)
        self._local_steps: dict[int, Step] = {}
        #: the step closed last: a StopExecution that follows its close still names it
        self._last_closed: tuple[int, Step] | None = None
        self._proc: RunningCommand | None = None
        self._terminating: asyncio.Task[None] | None = None
        self._stop_on_error: str | None = None
        self._leftovers = False
        self._sampler: asyncio.Task[None] | None = None

    # -- entry ------------------------------------------------------------------------------
    async def run(self, timeout: float | None = None) -> CommandOutcome:
        try:
            self._proc = await self.runner.start(self.spec)
        except SpawnError as exc:
            await self.state.system_line(self.owner.id, f"error: {exc}")
            return CommandOutcome(exit_code=exc.exit_code, reason=AbortReason.SPAWN_ERROR, error=str(exc))
        proc = self._proc
        forget_stop = self.state.on_stop(lambda: self._terminate(proc))
        priming = asyncio.get_running_loop().call_later(PRIME_DELAY, self._start_sampling, proc)
        timed_out = False
        try:
            if timeout is None:
                await self._until_output_ends(proc)
            else:
                ends = asyncio.ensure_future(self._until_output_ends(proc))
                try:
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(ends)
                except TimeoutError:
                    timed_out = True
                    await self.state.system_line(
                        self.owner.id, f"timed out after {_fmt_seconds(timeout)}; stopping the command"
                    )
                    self._terminate(proc)
                    await ends  # what it prints while it stops is kept too
            exit_code = await proc.wait()
            if self._terminating is not None:
                await self._terminating
        except asyncio.CancelledError:
            # the engine itself is going away: leave nothing running behind
            await asyncio.shield(proc.terminate(0.5))
            raise
        finally:
            forget_stop()
            priming.cancel()
            if self._sampler is not None:
                self._sampler.cancel()
        self._keep_final_usage(proc)
        return await self._outcome(exit_code, timed_out, timeout)

    async def _until_output_ends(self, proc: RunningCommand) -> None:
        """The output ends when the command and everything it started close their pipes. A
        background process that keeps them open after the command exited (`server &`) gets
        LEFTOVER_GRACE seconds, then the group is stopped: nothing is left running behind a step.
        The output is read here; one task watches the exit meanwhile."""
        watcher = asyncio.create_task(self._stop_leftovers(proc))
        try:
            await self._pump(proc)
        finally:
            watcher.cancel()

    async def _stop_leftovers(self, proc: RunningCommand) -> None:
        await proc.wait()
        await asyncio.sleep(LEFTOVER_GRACE)
        await self.state.system_line(
            self.owner.id,
            "the command exited but processes it started still hold its output open; stopping them",
        )
        self._leftovers = True
        self._terminate(proc)

    async def _outcome(self, exit_code: int, timed_out: bool, timeout: float | None) -> CommandOutcome:
        if timed_out:
            outcome = CommandOutcome(
                exit_code, AbortReason.TIMEOUT, f"timed out after {_fmt_seconds(timeout)}"
            )
        elif self._stop_on_error is not None:
            outcome = CommandOutcome(exit_code, AbortReason.STOP_ON_ERROR, self._stop_on_error)
        elif self.state.stop_reason is not None and self._terminating is not None and not self._leftovers:
            outcome = CommandOutcome(exit_code, self.state.stop_reason, self.state.stop_message)
        else:
            outcome = CommandOutcome(exit_code)
        # marker steps still open: completed with the exit code, or ended as the command was
        if outcome.reason is None:
            for action in self._tree.finish(exit_code):
                await self._apply(action)
            await self.state.counters_changed()
        else:
            status = (
                StepStatus.CANCELLED
                if outcome.reason in (AbortReason.USER, AbortReason.SHUTDOWN)
                else StepStatus.FAILED
            )
            for step in sorted(self._local_steps.values(), key=lambda s: s.index, reverse=True):
                await self.state.finish_step(
                    step, status, error=outcome.error, reason=outcome.reason, exit_code=exit_code
                )
        return outcome

    # -- reading output -----------------------------------------------------------------------
    async def _pump(self, proc: RunningCommand) -> None:
        # made on a stream's first output: many commands print nothing on one stream or both
        splitters: dict[Stream, LineSplitter] = {}
        async for stream, chunk in proc.output():
            splitter = splitters.get(stream)
            if splitter is None:
                splitter = splitters[stream] = LineSplitter()
            lines = splitter.feed(chunk)
            if lines:
                await self._ingest(stream, lines)
        for stream in (Stream.STDOUT, Stream.STDERR):
            rest = splitters[stream].flush() if stream in splitters else None
            if rest:
                await self._ingest(stream, rest)

    def _current_step_id(self) -> str:
        local = self._tree.current()
        if local is not None and local in self._local_steps:
            return self._local_steps[local].id
        return self.owner.id

    async def _ingest(self, stream: Stream, lines: list[str]) -> None:
        """A block of lines: the markers among them applied in order, and the lines published as
        few events as keep their order and their steps: a run of consecutive lines of one step is
        one event, ended by a change of step or by a marker that does something (subscribers see
        the lines and the steps' changes in the order they were printed). The execution's counters
        are published once, after the block. The block's events are held (`ExecutionState.hold`)
        and go to the store writer together."""
        state = self.state
        held = state.hold()
        try:
            await self._ingest_held(stream, lines)
        finally:
            if held:
                await state.release()

    async def _ingest_held(self, stream: Stream, lines: list[str]) -> None:
        state = self.state
        tree = self._tree
        run: list[str] = []
        run_step = self.owner.id
        start = 0
        #: the step open now, when known without asking (a step the usual way just opened)
        opened_last: str | None = None
        open_held, close_held, log_held = self._open_held, self._close_held, state.log_held_lines
        feed = tree.feed
        # what the held way below takes, asked once a block and again after anything that may
        # have let another task run (a mask added by another command of the execution)
        held_way = state.holding() and not state.masker
        for i, markers in self._parser.iter_lines(lines):
            # where the lines before the marker go, and the step the marker finds open
            before = opened_last or self._current_step_id()
            opened_last = None
            if i > start:
                if run and before != run_step:
                    await state.log_lines(run_step, stream, run)
                    run = []
                    held_way = state.holding() and not state.masker
                run_step = before
                if run:
                    run.extend(lines[start:i])
                else:
                    run = lines[start:i]
            if len(markers) == 1:
                marker = markers[0]
                actions = feed(marker)
                if held_way and (
                    type(actions[0]) in _HELD_ACTIONS if len(actions) == 1 else _opens_and_closes(actions)
                ):
                    # the usual marker (a step opened or closed) while the block's events are
                    # held: applied without coroutines, as below
                    closing = type(marker) is StepClosed  # then the actions only close
                    if closing:
                        # the line that closes a step is its last: it goes out with the step's
                        # lines before it, ahead of the close (one event where there were two)
                        if run and before != run_step:
                            log_held(run_step, stream, run)
                            run = []
                        run.append(lines[i])
                        log_held(before, stream, run)
                        run = []
                        run_step = before
                    elif run:
                        log_held(run_step, stream, run)
                        run = []
                    opened = None
                    for action in actions:
                        if type(action) is _OpenStep:
                            opened = open_held(action)  # type: ignore[arg-type]
                        elif close_held(action):  # type: ignore[arg-type]
                            await state.forget_stored()
                            held_way = state.holding() and not state.masker
                    if not closing:
                        # the marker line itself belongs to the step it opens, or the one it closes
                        run_step = opened or before
                        run.append(lines[i])
                        # the tree's innermost step: the one opened last
                        opened_last = opened
                    if state.spill_due():
                        await state.spill()
                        held_way = state.holding() and not state.masker
                    start = i + 1
                    continue
                fed = [actions]
            else:
                fed = [tree.feed(marker) for marker in markers]
            opened = None
            if len(markers) == 1 and type(markers[0]) is StepClosed:
                closes = fed[0]
                if closes and all(type(a) is mt.CloseStep for a in closes):
                    # as above, with coroutines
                    if run and before != run_step:
                        await state.log_lines(run_step, stream, run)
                        run = []
                    run.append(lines[i])
                    await state.log_lines(before, stream, run)
                    run = []
                    run_step = before
                    for action in closes:
                        await self._apply(action)
                    start = i + 1
                    held_way = state.holding() and not state.masker
                    continue
            for actions in fed:
                if run and actions:
                    await state.log_lines(run_step, stream, run)
                    run = []
                for action in actions:
                    new_step = await self._apply(action)
                    if new_step is not None:
                        opened = new_step
            # the marker line itself belongs to the step it opens, or the one it closes
            step_id = opened or before
            if run and step_id != run_step:
                await state.log_lines(run_step, stream, run)
                run = []
            run_step = step_id
            run.append(lines[i])
            start = i + 1
            held_way = state.holding() and not state.masker
        if start < len(lines):
            step_id = self._current_step_id()
            if run and step_id != run_step:
                await state.log_lines(run_step, stream, run)
                run = []
            run_step = step_id
            if run:
                run.extend(lines[start:])
            else:
                run = lines[start:] if start else lines  # a block without markers: as it came
        if run:
            await state.log_lines(run_step, stream, run)
        await state.counters_changed()

    def _open_held(self, action: mt.OpenStep) -> str:
        """`_apply` of an OpenStep while events are held and nothing is masked: the new step's id."""
        meta = action.params  # the tree's copy of the marker's, made for this action
        if action.dialect != "stepflow":
            meta.setdefault("dialect", action.dialect)
        parent_local_id = action.parent_local_id
        step = self.state.add_held_marker_step(
            self.owner if parent_local_id is None else self._step_for(parent_local_id),
            action.name,
            action.stop_on_error,
            action.estimated_duration,
            meta,
        )
        self._local_steps[action.local_id] = step
        return step.id

    def _close_held(self, action: mt.CloseStep) -> bool:
        """`_apply` of a CloseStep while events are held and nothing is masked; True when the
        finished marker steps are due to leave the live state (`ExecutionState.forget_stored`)."""
        closing = self._local_steps.pop(action.local_id, None)
        if closing is None:
            return False
        self._last_closed = (action.local_id, closing)
        if action.failed:
            return self.state.finish_held_marker_step(
                closing, StepStatus.FAILED, action.exit_code, action.error
            )
        return self.state.finish_held_marker_step(closing, StepStatus.COMPLETED, action.exit_code, None)

    # -- applying marker actions ---------------------------------------------------------------
    def _step_for(self, local_id: int | None) -> Step:
        if local_id is not None:
            step = self._local_steps.get(local_id)
            if step is not None:
                return step
            if self._last_closed is not None and self._last_closed[0] == local_id:
                return self._last_closed[1]
        return self.owner

    async def _apply(self, action: mt.Action) -> str | None:
        state = self.state
        action = _masked(action, state.masker)
        match action:
            case mt.OpenStep():
                parent = self._step_for(action.parent_local_id)
                meta = dict(action.params)
                if action.dialect != "stepflow":
                    meta.setdefault("dialect", action.dialect)
                step = await state.add_marker_step(
                    parent,
                    action.name,
                    stop_on_error=action.stop_on_error,
                    estimated_duration=action.estimated_duration,
                    metadata=meta,
                    counters=False,
                )
                self._local_steps[action.local_id] = step
                return step.id
            case mt.CloseStep():
                closing = self._local_steps.pop(action.local_id, None)
                if closing is not None:
                    self._last_closed = (action.local_id, closing)
                    if action.failed:
                        await state.finish_step(
                            closing,
                            StepStatus.FAILED,
                            error=action.error,
                            exit_code=action.exit_code,
                            counters=False,
                        )
                    else:
                        await state.finish_step(
                            closing, StepStatus.COMPLETED, exit_code=action.exit_code, counters=False
                        )
            case mt.SetProgress():
                step = self._step_for(action.local_id)
                if action.percent is not None:
                    step.progress = max(0.0, min(100.0, float(action.percent)))
                if action.text:
                    step.metadata["progress_text"] = action.text
                await state.update_step(step)
            case mt.SetMeta():
                await self._set_meta(action.local_id, action.key, action.value)
            case mt.AddArtifact():
                await self._add_artifact(self._step_for(action.local_id), action.path, action.description)
            case mt.Annotate():
                step = self._step_for(action.local_id)
                annotations = step.metadata.setdefault("annotations", [])
                note = {"level": action.level, "message": action.message}
                if action.file:
                    note["file"] = action.file
                if action.line is not None:
                    note["line"] = str(action.line)
                annotations.append(note)
                await state.update_step(step)
                await state.notice(step.id, action.level, action.message)
            case mt.AddMask():
                state.masker.add(action.value)
            case mt.StopExecution():
                step = self._step_for(action.local_id)
                self._stop_on_error = action.message or f"step '{step.name}' failed (stop_on_error)"
                await state.system_line(
                    step.id, f"stop_on_error: {self._stop_on_error}; stopping the command"
                )
                if self._proc is not None:
                    self._terminate(self._proc)
            case mt.Warn():
                log.warning("%s: %s", state.execution.id, action.message)
                await state.notice(self._current_step_id(), "warning", action.message)
        return None

    async def _set_meta(self, local_id: int | None, key: str, value: str) -> None:
        state = self.state
        if local_id is None or local_id not in self._local_steps:
            # no marker step open: the metadata is the execution's (or its workflow step's)
            target_meta = state.execution.metadata if self.owner.parent_id is None else self.owner.metadata
        else:
            target_meta = self._local_steps[local_id].metadata
        upper = key.upper()
        step = self._step_for(local_id)
        if upper == "ESTIMATED_DURATION":
            with contextlib.suppress(ValueError):
                step.estimated_duration = float(value)
        elif upper == "DESCRIPTION":
            step.description = value
        else:
            target_meta[key] = value
        await state.update_step(step)

    async def _add_artifact(self, step: Step, path: str, description: str) -> None:
        state = self.state
        # the copy takes its time, and the artifact's event names a step that must be stored first
        await state.release()
        artifact_id = new_id()
        folder = self.artifacts.folder_for(state.execution.id, artifact_id)
        from engine.artifacts import safe_file_name

        # the path is where the file is; what is kept and shown of it is masked
        file_name = state.masker.mask(Path(path).name)
        dest = folder / safe_file_name(file_name)
        try:
            await self.runner.fetch(path, self.spec.cwd, dest)
        except (FetchError, OSError) as exc:
            message = state.masker.mask(f"artifact refused: {exc}")
            log.error("%s: %s", state.execution.id, message)
            await state.system_line(step.id, message)
            await state.notice(step.id, "error", message)
            return
        artifact = await self.artifacts.describe(
            artifact_id=artifact_id,
            execution_id=state.execution.id,
            step_id=step.id,
            stored=dest,
            name=description or file_name,
            description=description,
        )
        await state.hub.publish(ArtifactAdded(artifact))

    async def collect_globs(self, patterns: list[str]) -> None:
        for pattern in patterns:
            try:
                matches = await self.runner.glob(pattern, self.spec.cwd)
            except (FetchError, OSError) as exc:
                await self.state.system_line(self.owner.id, f"artifacts {pattern!r}: {exc}")
                continue
            if not matches:
                await self.state.system_line(self.owner.id, f"artifacts {pattern!r}: no file matched")
            for match in matches:
                await self._add_artifact(self.owner, match, "")

    # -- stopping ---------------------------------------------------------------------------------
    def _terminate(self, proc: RunningCommand) -> None:
        if self._terminating is None:
            self._terminating = asyncio.create_task(proc.terminate(self.kill_grace))

    def _start_sampling(self, proc: RunningCommand) -> None:
        """Take the first sample, which primes psutil (its first CPU reading of a process is always
        0, so that the next sample counts); None means nothing to sample (a remote command, or one
        that ended)."""
        if self._sampler is not None:
            return
        try:
            first = proc.sample()
        except Exception:  # psutil races with exiting processes: try again later
            first = None
        else:
            if first is None:
                return
        self._sampler = asyncio.create_task(self._sample(proc, first))

    async def _sample(self, proc: RunningCommand, first: ResourceSample | None) -> None:
        """Samples every SAMPLE_INTERVAL seconds from the command's start (primed at PRIME_DELAY)."""
        owner = self.owner
        if first is not None:
            # its RSS counts (only its CPU does not): a step that ends before the next sample has
            # no other tree figure
            self._keep_rss(first.rss_bytes)
            await self.state.update_step(owner)
        delay = SAMPLE_INTERVAL - PRIME_DELAY
        while True:
            await asyncio.sleep(delay)
            delay = SAMPLE_INTERVAL
            try:
                sample = proc.sample()
            except Exception:  # psutil races with exiting processes; a missed sample is harmless
                continue
            if sample is None:
                return
            owner.cpu_percent = round(sample.cpu_percent, 1)
            self._keep_rss(sample.rss_bytes)
            await self.state.update_step(owner)

    def _keep_rss(self, rss: int) -> None:
        owner = self.owner
        owner.rss_bytes = rss
        if rss > owner.metadata.get("peak_rss_bytes", 0):
            owner.metadata["peak_rss_bytes"] = rss

    def _keep_final_usage(self, proc: RunningCommand) -> None:
        """What the runner counted over the whole run replaces the last sample: CPU% becomes the
        average of the run, RSS the peak of what was sampled and what the runner saw. No event of
        its own: the step's end, which follows, carries them."""
        usage = proc.final_usage()
        if usage is None:
            return
        owner = self.owner
        owner.cpu_percent = round(usage.cpu_percent, 1)
        peak = max(usage.peak_rss_bytes or 0, owner.metadata.get("peak_rss_bytes", 0))
        if peak:
            owner.rss_bytes = peak
            owner.metadata["peak_rss_bytes"] = peak


_HELD_ACTIONS = frozenset({mt.OpenStep, mt.CloseStep})
_OpenStep = mt.OpenStep


def _opens_and_closes(actions: list[mt.Action]) -> bool:
    """`actions` only open and close steps (at least one)."""
    if not actions:
        return False
    for action in actions:
        kind = type(action)
        if kind is not mt.OpenStep and kind is not mt.CloseStep:
            return False
    return True


def _masked(action: mt.Action, masker: Masker) -> mt.Action:
    """The action with the secrets masked in every text it takes from the output (step names,
    messages, errors, metadata, descriptions, progress text), before any of it becomes a step or
    an event: the store, the TUI, the API and the log all see only the masked text. Kept as they
    are: the value to mask, and the path an artifact is fetched from."""
    if not masker or isinstance(action, mt.AddMask):
        return action
    return masker.mask_fields(action, keep=("path",) if isinstance(action, mt.AddArtifact) else ())


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"

"""A running job's output as its worker streams it (`stepflow worker`): log lines, and steps from the
markers in them, while the job runs. (The reference's executor streams nothing: its output all
comes with its report, `engine.job_output`.)

Each job whose worker streams gets a `LiveJob`: the same `CommandPump` a local command's output goes
through, fed by a `StreamedCommand` whose output is what arrives. Every piece of output names its
stream and its offset there (in bytes of UTF-8), so that a piece sent twice is taken once, and the
report at the end replays only what the stream did not bring (`unstreamed`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from engine.artifacts import ArtifactStore
from engine.errors import InvalidRequest
from engine.execution.command_pump import CommandOutcome, CommandPump
from engine.execution.state import ExecutionState
from engine.job_output import ReportedRunner
from engine.model import AbortReason, Step, StepStatus, Stream
from engine.runners.base import CommandSpec, ResourceSample, ResourceUsage

#: the note a cut report ends with (the worker's, `api_compat.executr.worker.cut_output`, or the
#: server's, `engine.job_output.truncate_utf8`)
_CUT_NOTE = re.compile(r"\n\[stepflow(?: worker)?: output truncated: [^\n]*\]\n\Z")
log = logging.getLogger(__name__)

#: the branch's metadata key: the attempt whose output streams under it
LIVE_ATTEMPT = "executr.live_attempt"
#: what a report's text and a stream's pieces are counted in
ENCODING = ("utf-8", "surrogatepass")


class OutputGap(InvalidRequest):
    """A piece of output starts past what was received of its stream: one before it is missing."""


class OutputLost(InvalidRequest):
    """What records the job's output stopped; the report at the end is taken all the same."""


@dataclass(slots=True, frozen=True)
class OutputPiece:
    """Some of a running job's output: `text` at byte `offset` of its stream's UTF-8."""

    stream: Stream
    offset: int
    text: str

    def past(self, received: int) -> bytes:
        """Its bytes past the first `received` of its stream (none when sent before: a piece sent
        twice is taken once); OutputGap when it starts past them, after a piece that never came."""
        if self.offset > received:
            raise OutputGap(f"{self.stream.value} output at byte {self.offset}, but only {received} bytes were "
                            "received: send from there")
        return self.text.encode(*ENCODING)[received - self.offset:]


class StreamedCommand:
    """A command running elsewhere: its output is what its worker sends, its exit code what it reports."""

    def __init__(self) -> None:
        self._pieces: asyncio.Queue[tuple[Stream, bytes] | None] = asyncio.Queue()
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def pid(self) -> int | None:
        return None

    def feed(self, stream: Stream, data: bytes) -> None:
        self._pieces.put_nowait((stream, data))

    async def taken(self) -> None:
        """Wait until everything fed is through the pump (its lines and steps published)."""
        await self._pieces.join()

    def end(self, exit_code: int) -> None:
        self._pieces.put_nowait(None)
        if not self._exit.done():
            self._exit.set_result(exit_code)

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        while True:
            piece = await self._pieces.get()
            try:
                if piece is None:
                    return
                yield piece
            finally:
                self._pieces.task_done()

    async def wait(self) -> int:
        return await self._exit

    async def terminate(self, grace: float) -> None:
        return None  # its worker holds it: the server cannot stop it

    def sample(self) -> ResourceSample | None:
        return None

    def final_usage(self) -> ResourceUsage | None:
        return None


@dataclass(slots=True)
class LiveJob:
    """One attempt of a job whose output arrives as it runs."""

    worker: str
    attempt: int
    state: ExecutionState
    branch: Step
    command: StreamedCommand
    pump: asyncio.Task[CommandOutcome]
    #: bytes of each stream received so far (None: not yet known, after a restart of the server)
    received: dict[Stream, int | None] = field(default_factory=dict)
    #: one piece of output (or the end) at a time
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: bool = False

    @classmethod
    async def start(cls, state: ExecutionState, branch: Step, worker: str, attempt: int,
                    artifacts: ArtifactStore) -> LiveJob:
        """Start the job's branch (its worker's name) and a pump reading what will arrive. A branch
        that already runs streamed before this server started: what it received then is stored, and
        the marker steps it left open are closed (the pump that knew them is gone)."""
        resumed = branch.status is StepStatus.RUNNING and branch.metadata.get(LIVE_ATTEMPT) == attempt
        branch.target = branch.name = worker or branch.name
        branch.metadata[LIVE_ATTEMPT] = attempt
        if branch.status is StepStatus.PENDING:
            await state.start_step(branch)
        else:  # an attempt before this one ran under it
            await state.update_step(branch)
        if resumed:
            await state.close_open_children(branch.id, StepStatus.CANCELLED, AbortReason.SHUTDOWN)
            await state.system_line(branch.id, "the server restarted while this job ran; its output goes on")
        command = StreamedCommand()
        pump = CommandPump(state, branch, ReportedRunner(command, worker),
                           CommandSpec(execution_id=state.execution.id), artifacts)
        task = asyncio.create_task(pump.run(), name=f"job-output-{state.execution.id}")
        received: dict[Stream, int | None] = {s: (None if resumed else 0) for s in (Stream.STDOUT, Stream.STDERR)}
        return cls(worker, attempt, state, branch, command, task, received)

    async def take(self, pieces: Sequence[OutputPiece]) -> None:
        """Pieces of output, in order; returns once their lines and steps are published. A piece
        (or the part of it) received before is skipped; one past a gap is refused (OutputGap)."""
        async with self.lock:
            if self.ended:
                return
            for piece in pieces:
                have = self.received.get(piece.stream)
                if have is None:  # the first piece since this server started: where the stream was
                    have = piece.offset
                data = piece.past(have)
                self.received[piece.stream] = have + len(data)
                if data:
                    self.command.feed(piece.stream, data)
            taken = asyncio.ensure_future(self.command.taken())
            try:
                await asyncio.wait({taken, self.pump}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                taken.cancel()
            if self.pump.done():  # it failed (the pump of a live job ends only with `end`)
                self.ended = True
                raise OutputLost(f"the output of job {self.state.execution.id} can no longer be recorded")

    async def end(self, stdout: str, stderr: str, exit_code: int) -> CommandOutcome:
        """The job ended with this report: what of it the stream did not bring goes through the
        pump, then the output ends; the pump's outcome (its marker steps closed)."""
        async with self.lock:
            if not self.ended:
                self.ended = True
                for stream, text in ((Stream.STDOUT, stdout), (Stream.STDERR, stderr)):
                    rest = unstreamed(text, self.received.get(stream) or 0)
                    if rest:
                        self.command.feed(stream, rest)
                self.command.end(exit_code)
        return await self.pump

    async def abort(self, message: str) -> None:
        """The attempt is over without a report (its worker went silent): the marker steps it left
        open fail, and a line says why."""
        async with self.lock:
            if not self.ended:
                self.ended = True
                self.command.end(-1)
        try:
            await self.pump
        except Exception:  # it failed before: nothing more to close
            log.exception("job %s: its output pump had failed", self.state.execution.id)
        await self.state.system_line(self.branch.id, message)


def unstreamed(report: str, received: int) -> bytes:
    """What of a stream's report (as its worker sent it at the end, perhaps cut with a note) was not
    received while the job ran, `received` bytes of it: the rest of it, and the note when the
    stream did not get past where the report was cut."""
    data = report.encode(*ENCODING)
    if received <= 0:
        return data
    cut = _CUT_NOTE.search(report)
    if cut is None:
        return data[received:]
    head = report[:cut.start()].encode(*ENCODING)
    if received > len(head):
        return b""  # the stream brought more than the report kept
    return head[received:] + cut.group().encode(*ENCODING)

"""The `worker` target: commands run by `stepflow worker` processes that ask for them.

A workflow step on a `worker` target (`{type: worker, pool: NAME}`) does not start a process here:
`WorkerRunner.start` puts a `RemoteCommand` in its pool's queue and returns it at once, and the step
runs as any other (the engine's command pump reads its output, markers become steps, its exit code
ends it, retries and cancels are the engine's). A worker of the pool claims the command (a long poll),
runs it on its machine, sends its output with offsets as it prints, heartbeats, and reports its exit.

A command whose worker goes silent for `stale_after` seconds ends with exit code -1 and a line
saying so (the step fails, or runs again on its retries); a cancelled command ends at once, and its
worker learns it from its next heartbeat or output (refused: `CommandGone`) and kills what it runs.
The pool remembers each worker's last heartbeat (a claim counts): a runner's health shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import Conflict, NotFound
from engine.job_live import ENCODING, OutputPiece, StreamedCommand
from engine.model import Stream, new_id
from engine.runners.base import CommandSpec, FetchError, ResourceSample, ResourceUsage

#: seconds without a heartbeat after which a worker's command is given up
DEFAULT_STALE_AFTER = 15.0
#: longest an output request waits for its lines to be published
TAKEN_TIMEOUT = 30.0


class CommandGone(Conflict):
    """The command was cancelled, given up, or is held by another worker."""


class RemoteCommand:
    """One step's command, waiting for a worker of its pool, then running there."""

    def __init__(self, pool: str, spec: CommandSpec) -> None:
        self.id = new_id()
        self.pool = pool
        self.spec = spec
        self.worker: str | None = None
        self.claimed_at: float | None = None
        self.last_beat = 0.0
        self.ended = False
        self.reason = ""
        self._stream = StreamedCommand()
        self._received = {Stream.STDOUT: 0, Stream.STDERR: 0}
        #: stderr's last line is not ended yet (a note of ours starts a line of its own)
        self._open_line = False
        self._lock = asyncio.Lock()

    # -- RunningCommand -------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None

    def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        return self._stream.output()

    async def wait(self) -> int:
        return await self._stream.wait()

    async def terminate(self, grace: float) -> None:
        """Ends it here at once; its worker, told at its next heartbeat, kills what it runs."""
        self.give_up("cancelled", None)

    def sample(self) -> ResourceSample | None:
        return None

    def final_usage(self) -> ResourceUsage | None:
        return None

    # -- the worker's side ----------------------------------------------------------------------
    def description(self) -> dict[str, object]:
        spec = self.spec
        return {"id": self.id, "execution_id": spec.execution_id, "script": spec.script,
                "argv": list(spec.argv) if spec.argv is not None else None, "shell": spec.shell,
                "env": dict(spec.env)}

    def check_holder(self, worker: str) -> None:
        if self.ended:
            raise CommandGone(f"command {self.id} is over ({self.reason or 'ended'})")
        if self.worker != worker:
            raise CommandGone(f"command {self.id} is held by worker {self.worker!r}, not {worker!r}")

    async def take(self, worker: str, pieces: Sequence[OutputPiece]) -> None:
        async with self._lock:
            self.check_holder(worker)
            self.last_beat = time.monotonic()
            for piece in pieces:
                have = self._received[piece.stream]
                data = piece.past(have)
                self._received[piece.stream] = have + len(data)
                if data:
                    self._stream.feed(piece.stream, data)
                    if piece.stream is Stream.STDERR:
                        self._open_line = not data.endswith(b"\n")
        await self._taken()

    async def finish(self, worker: str, exit_code: int, stdout: str = "", stderr: str = "") -> None:
        """Its worker's report: the output the stream did not bring (from byte where it stopped), the exit."""
        async with self._lock:
            self.check_holder(worker)
            for stream, text in ((Stream.STDOUT, stdout), (Stream.STDERR, stderr)):
                rest = text.encode(*ENCODING)[self._received[stream]:]
                if rest:
                    self._stream.feed(stream, rest)
            self.ended, self.reason = True, f"exit {exit_code}"
            self._stream.end(exit_code)
        await self._taken()

    async def _taken(self) -> None:
        """Wait until what was fed is through the engine's pump (not forever: a pump that failed
        reads no more)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TAKEN_TIMEOUT):
                await self._stream.taken()

    def give_up(self, reason: str, line: str | None) -> None:
        if self.ended:
            return
        self.ended, self.reason = True, reason
        if line:
            text = ("\n" if self._open_line else "") + f"[stepflow: {line}]\n"
            self._stream.feed(Stream.STDERR, text.encode(*ENCODING))
        self._stream.end(-1)


@dataclass(slots=True)
class _Pool:
    waiting: deque[RemoteCommand] = field(default_factory=deque)
    work: asyncio.Event = field(default_factory=asyncio.Event)
    #: worker -> monotonic time of its last heartbeat (or claim), and wall-clock time of it
    beats: dict[str, tuple[float, float]] = field(default_factory=dict)


class WorkerPool:
    """Every pool's queue of commands and the commands its workers run (one per engine)."""

    def __init__(self, stale_after: float = DEFAULT_STALE_AFTER) -> None:
        self.stale_after = stale_after
        self._pools: dict[str, _Pool] = {}
        self._commands: dict[str, RemoteCommand] = {}
        self._watchdog: asyncio.Task[None] | None = None

    def _pool(self, name: str) -> _Pool:
        return self._pools.setdefault(name, _Pool())

    def submit(self, pool: str, spec: CommandSpec) -> RemoteCommand:
        command = RemoteCommand(pool, spec)
        self._commands[command.id] = command
        p = self._pool(pool)
        p.waiting.append(command)
        p.work.set()
        self._ensure_watchdog()
        return command

    async def claim(self, pool: str, worker: str, wait: float) -> RemoteCommand | None:
        """The oldest command waiting in `pool`, now `worker`'s; None when none came within `wait` s."""
        p = self._pool(pool)
        deadline = time.monotonic() + max(wait, 0.0)
        while True:
            self.beat(pool, worker)
            while p.waiting:
                command = p.waiting.popleft()
                if command.ended:
                    self._commands.pop(command.id, None)
                    continue
                command.worker, command.claimed_at = worker, time.monotonic()
                command.last_beat = command.claimed_at
                return command
            p.work.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, max(self.stale_after / 3, 0.5))):
                    await p.work.wait()

    def unclaim(self, command: RemoteCommand) -> None:
        """A claim whose answer could not be sent (its worker left): back to the head of its queue."""
        if command.ended:
            return
        command.worker = command.claimed_at = None
        p = self._pool(command.pool)
        p.waiting.appendleft(command)
        p.work.set()

    def command(self, pool: str, command_id: str) -> RemoteCommand:
        command = self._commands.get(command_id)
        if command is None or command.pool != pool:
            raise NotFound(f"no command {command_id} for {pool}")
        return command

    def heartbeat(self, pool: str, command_id: str, worker: str) -> None:
        command = self.command(pool, command_id)
        command.check_holder(worker)
        command.last_beat = time.monotonic()
        self.beat(pool, worker)

    def beat(self, pool: str, worker: str) -> None:
        self._pool(pool).beats[worker] = (time.monotonic(), time.time())

    def last_heartbeat(self, pool: str) -> tuple[str, float, float] | None:
        """The worker heard from last: (worker, seconds ago, wall-clock time), or None."""
        beats = self._pool(pool).beats if pool in self._pools else {}
        if not beats:
            return None
        worker, (mono, wall) = max(beats.items(), key=lambda kv: kv[1][0])
        return worker, time.monotonic() - mono, wall

    def running(self, pool: str) -> list[RemoteCommand]:
        return [c for c in self._commands.values() if c.pool == pool and c.worker and not c.ended]

    def forget(self, pool: str) -> None:
        self._pools.pop(pool, None)

    def sweep(self) -> list[RemoteCommand]:
        """Give up the commands whose worker is silent; forget the ended ones."""
        now = time.monotonic()
        given_up = []
        for command in list(self._commands.values()):
            if command.worker and not command.ended and now - command.last_beat > self.stale_after:
                command.give_up("its worker went silent", f"no heartbeat from worker {command.worker} for "
                                f"{self.stale_after:g}s: the command is given up")
                given_up.append(command)
            if command.ended:
                self._commands.pop(command.id, None)
        return given_up

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.create_task(self._watch(), name="worker-pool-watchdog")

    async def _watch(self) -> None:
        while self._commands:
            await asyncio.sleep(max(self.stale_after / 5, 0.2))
            self.sweep()

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog


class WorkerRunner:
    """The runner of a `worker` target: its commands go to the pool's workers."""

    def __init__(self, pool: WorkerPool, name: str) -> None:
        self._pool = pool
        self._name = name

    async def start(self, spec: CommandSpec) -> RemoteCommand:
        return self._pool.submit(self._name, spec)

    async def fetch(self, path: str, cwd: str | None, dest: Path) -> str:
        raise FetchError(f"{path} is on a worker of {self._name}, which does not send files")

    async def glob(self, pattern: str, cwd: str | None) -> list[str]:
        return []

    async def close(self) -> None:
        return None

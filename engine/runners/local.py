"""Run commands on this machine.

Each command gets its own session and process group, stdin from /dev/null and one pipe each for
stdout and stderr; it is started on the event loop (`engine.runners.local_spawn` says why that is
cheap). The pipes are read by the loop (`add_reader` on their descriptors: a transport per pipe
cost more than the reading) and the exit is watched through a pidfd, so no thread waits per command.

Resources are sampled with psutil while a command runs, but the first sample comes only after a
while (most commands are over by then), so the command's final figures come from the kernel: the
leader is reaped with `wait4`, whose usage covers it and the descendants it waited for. Its
`ru_maxrss` is no less than our own RSS when it was started: the kernel counts the memory a process
had before its exec, which for our child is a copy of ours (fork) or ours (vfork). Only a figure
above that floor says something about the command.

A command is stopped as a tree: SIGTERM to its process group and to the descendants that left it,
a grace period, then SIGKILL. Descendants are found by parentage, by session and group, and by a
tag in their environment (`STEPFLOW_PROCESS_TAG`), which also finds daemons that double-forked
away from the tree.

Should the engine die without stopping them (kill -9), its watchdog process stops the commands it
was told of (`engine.runners.orphans`: why a watchdog rather than PR_SET_PDEATHSIG is told there);
the tag, led by the execution's id, lets the next start stop what is left of lost executions.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import psutil

from engine.model import Stream
from engine.runners.base import CommandSpec, FetchError, ResourceSample, ResourceUsage
from engine.runners.local_spawn import kill_abandoned_process, spawn
from engine.runners.orphans import TAG_VARIABLE, command_tag, watchdog

log = logging.getLogger(__name__)

#: largest chunk handed to the consumer of `output()`
READ_CHUNK = 65536
#: bytes asked of a pipe per read (a pipe holds 64 KiB unless enlarged)
READ_SIZE = 64 * 1024
#: bytes read but not yet taken by the consumer above which reading pauses (the command then
#: blocks on its full pipe), and below which it resumes (a quarter of it). What is read and not
#: yet stored dies with a killed engine, so the runner's commands share READ_AHEAD between them
#: (each gets at least MIN_HIGH_WATER): one command keeps 64 KiB (no cost in bench/ingest.py), a
#: hundred 8 KiB each, rather than 100 x 128 KiB, ~1M short lines at a kill (bench/crash_loss.py)
READ_AHEAD = 256 * 1024
MAX_HIGH_WATER = 64 * 1024
MIN_HIGH_WATER = 8 * 1024
#: how long to wait for SIGKILLed processes to disappear before giving up on them
KILL_WAIT = 5.0
#: grace given to commands still running when the runner is closed
CLOSE_GRACE = 1.0
#: commands running at once from which the next one is started in a worker thread. On the loop, a
#: start holds it until the child has exec'd (engine.runners.local_spawn): 0.1-0.3 ms on a quiet
#: machine, the fastest way for a workflow's next step; but with many commands starting at once (an
#: API creating hundreds of executions a second) each exec's wait, up to a millisecond on a busy
#: machine, held everything else the loop serves, the API's answers among them: 40% of its time.
SPAWN_ON_LOOP_BELOW = 4
#: bytes per unit of `ru_maxrss` (KiB on Linux, bytes on macOS)
_MAXRSS_UNIT = 1 if sys.platform == "darwin" else 1024


class LocalRunner:
    """Runs commands as child processes of this one."""

    def __init__(self) -> None:
        self._running: set[LocalCommand] = set()
        #: /dev/null, opened once for every command's stdin (Popen's DEVNULL opens it per command)
        self._devnull: int | None = None

    async def start(self, spec: CommandSpec) -> LocalCommand:
        tag = command_tag(spec.execution_id)
        if self._devnull is None:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        # told before the spawn: the engine may die at any instant after it
        orphans = watchdog()
        orphans.watch(tag)
        started = time.monotonic()
        try:
            if len(self._running) < SPAWN_ON_LOOP_BELOW:
                proc = spawn(spec, tag, self._devnull)
            else:
                proc = await self._spawn_in_thread(spec, tag, self._devnull)
        except BaseException:
            orphans.forget(tag)
            raise
        try:
            command = LocalCommand(proc, tag, started, self._running)
            command._connect()
        except BaseException:
            kill_abandoned_process(proc)
            orphans.forget(tag)
            raise
        # Kept until it exited and its pipes closed: until then something of it may still run (and
        # the watchdog stops, with a dead engine, what a clean shutdown would: these).
        self._running.add(command)
        command._done.add_done_callback(lambda _: self._finished(command))
        return command

    @staticmethod
    async def _spawn_in_thread(spec: CommandSpec, tag: str, stdin: int) -> subprocess.Popen[bytes]:
        """`spawn` in a worker thread; a process it started for a caller cancelled meanwhile is
        killed, not left behind."""
        spawning = asyncio.get_running_loop().run_in_executor(None, spawn, spec, tag, stdin)
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                kill_abandoned_process(await spawning)
            raise

    def _finished(self, command: LocalCommand) -> None:
        self._running.discard(command)
        watchdog().forget(command._tag)

    async def fetch(self, path: str, cwd: str | None, dest: Path) -> str:
        return await asyncio.to_thread(_fetch, path, cwd, dest)

    async def glob(self, pattern: str, cwd: str | None) -> list[str]:
        return await asyncio.to_thread(_glob, pattern, cwd)

    async def close(self) -> None:
        """Stop the commands still running, and what finished commands left running behind
        while holding their output open."""
        running = list(self._running)
        if running:
            await asyncio.gather(*(command.terminate(CLOSE_GRACE) for command in running))
        devnull, self._devnull = self._devnull, None
        if devnull is not None:
            os.close(devnull)


class LocalCommand:
    """One started command: its output, its exit, and its process tree."""

    def __init__(self, proc: subprocess.Popen[bytes], tag: str, started: float,
                 siblings: set[LocalCommand] | None = None) -> None:
        self._proc = proc
        self._tag = tag
        #: monotonic clock when it was started, and when its leader's exit was seen
        self._started = started
        self._exited_at: float | None = None
        #: our peak RSS (in ru_maxrss units) after the spawn: the leader's ru_maxrss starts there
        self._maxrss_floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        #: what the kernel counted for it, once the leader is reaped
        self._usage: ResourceUsage | None = None
        self._loop = asyncio.get_running_loop()
        #: the process group (and session) the command was started in
        self._pgid = proc.pid
        #: the leader was waited for: its pid, hence the group id, may now be reused
        self._reaped = False
        #: psutil's handle on the leader, made on the first sample (most commands end before)
        self._leader: psutil.Process | None = None
        #: processes seen in the tree, kept so that their cpu_percent has a previous reading
        self._sampled: dict[int, psutil.Process] = {}
        #: the runner's running commands, this one among them: they share READ_AHEAD
        self._siblings = siblings if siblings is not None else set()
        self._chunks: collections.deque[tuple[Stream, bytes]] = collections.deque()
        self._buffered = 0
        self._paused = False
        #: stdout and stderr, until each is closed
        self._open_pipes = 2
        #: descriptor -> (stream, pipe) of the pipes not closed yet
        self._pipes: dict[int, tuple[Stream, IO[bytes]]] = {}
        self._waiter: asyncio.Future[None] | None = None
        self._exited: asyncio.Future[int] = self._loop.create_future()
        #: resolved once the command exited and both pipes closed
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._terminate_lock = asyncio.Lock()
        #: watched for the leader's exit, until it is seen
        self._pidfd: int | None = None
        self._watch_exit()

    def _connect(self) -> None:
        for stream, pipe in ((Stream.STDOUT, self._proc.stdout), (Stream.STDERR, self._proc.stderr)):
            assert pipe is not None
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            self._pipes[fd] = (stream, pipe)
            self._loop.add_reader(fd, self._read_ready, fd)

    def _read_ready(self, fd: int) -> None:
        try:
            data = os.read(fd, min(READ_SIZE, self._high_water()))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # not expected of a pipe; its end, as far as we can tell
            log.warning("pid %s: reading its output failed: %s", self.pid, exc)
            data = b""
        if data:
            self._on_data(self._pipes[fd][0], data)
            return
        self._loop.remove_reader(fd)
        _stream, pipe = self._pipes.pop(fd)
        pipe.close()
        self._on_pipe_closed()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    # -- output -----------------------------------------------------------------------------
    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        """Chunks of at most READ_CHUNK bytes, in arrival order, until both pipes are closed.

        For one consumer. While it does not read, at most about its high water (`_high_water`) waits here; then
        the pipes are no longer read and the command blocks on its next write."""
        chunks = self._chunks
        while True:
            while chunks:
                stream, data = chunks.popleft()
                self._buffered -= len(data)
                if self._paused and self._buffered <= self._high_water() // 4:
                    self._set_paused(False)
                if len(data) <= READ_CHUNK:
                    yield stream, data
                else:
                    for start in range(0, len(data), READ_CHUNK):
                        yield stream, data[start : start + READ_CHUNK]
            if self._open_pipes == 0:
                return
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _on_data(self, stream: Stream, data: bytes) -> None:
        self._chunks.append((stream, data))
        self._buffered += len(data)
        if not self._paused and self._buffered > self._high_water():
            self._set_paused(True)
        self._wake()

    def _high_water(self) -> int:
        return max(MIN_HIGH_WATER, min(MAX_HIGH_WATER, READ_AHEAD // max(len(self._siblings), 1)))

    def _on_pipe_closed(self) -> None:
        self._open_pipes -= 1
        self._wake()
        if self._open_pipes == 0 and not self._exited.done():
            self._poll_exit()
        self._check_done()

    def _check_done(self) -> None:
        if self._exited.done() and self._open_pipes == 0 and not self._done.done():
            self._done.set_result(None)
            if not self._terminate_lock.locked():  # terminate() reaps when it is done with the group
                self._reap()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        for fd in self._pipes:
            if paused:
                self._loop.remove_reader(fd)
            else:
                self._loop.add_reader(fd, self._read_ready, fd)

    # -- exit -------------------------------------------------------------------------------
    # The exit status is read without reaping the leader (waitid WNOWAIT). It is reaped once its
    # output is closed, or at the end of terminate(): until then its zombie holds its pid, so the
    # process group id cannot be reused and signalling the group never reaches another command.
    def _watch_exit(self) -> None:
        try:
            pidfd = os.pidfd_open(self._proc.pid)
        except (AttributeError, OSError):
            # No pidfd (old kernel, seccomp): one daemon thread waits for this process.
            threading.Thread(target=self._wait_in_thread, name=f"wait-{self._proc.pid}", daemon=True).start()
            return

        self._pidfd = pidfd
        self._loop.add_reader(pidfd, self._poll_exit)

    def _poll_exit(self) -> None:
        """The pidfd is readable, or the output just ended (most commands exit as they close it,
        and the pidfd's turn would cost one more round of the loop): has the leader exited?"""
        pidfd = self._pidfd
        if pidfd is None:
            return
        try:
            status = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:  # somebody else reaped it (a waitpid(-1) elsewhere)
            status = None
            self._reaped = True
        else:
            if status is None:
                return
        self._pidfd = None
        self._loop.remove_reader(pidfd)
        os.close(pidfd)
        self._set_exited(status)

    def _wait_in_thread(self) -> None:
        try:
            status = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            status = None
            self._reaped = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._set_exited, status)

    def _set_exited(self, status: os.waitid_result | None) -> None:
        if self._exited.done():
            return
        self._exited_at = time.monotonic()
        if status is None:
            code = 255  # its status went to whoever reaped it
        elif status.si_code == os.CLD_EXITED:
            code = status.si_status
        else:  # killed or dumped core: si_status is the signal
            code = 128 + status.si_status
        self._exited.set_result(code)
        self._check_done()

    def _reap(self) -> None:
        if not self._reaped and self._exited.done():
            try:
                _pid, status, usage = os.wait4(self._proc.pid, 0)  # the zombie is there: returns at once
            except ChildProcessError:  # reaped elsewhere (a waitpid(-1)): its usage went with it
                pass
            else:
                self._proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
                self._usage = self._final_figures(usage)
            self._reaped = True

    def _final_figures(self, usage: resource.struct_rusage) -> ResourceUsage:
        assert self._exited_at is not None
        wall = self._exited_at - self._started
        cpu = usage.ru_utime + usage.ru_stime
        maxrss = usage.ru_maxrss
        return ResourceUsage(
            cpu_percent=100.0 * cpu / wall if wall > 0 else 0.0,
            peak_rss_bytes=maxrss * _MAXRSS_UNIT if maxrss > self._maxrss_floor else None,
        )

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    # -- stopping ---------------------------------------------------------------------------
    async def terminate(self, grace: float) -> None:
        async with self._terminate_lock:
            try:
                await self._terminate(grace)
            finally:
                if self._done.done():
                    self._reap()

    async def _terminate(self, grace: float) -> None:
        tree = await asyncio.to_thread(self._find_tree, {})
        if not tree and self._exited.done() and not await asyncio.to_thread(self._group_alive):
            return
        self._signal(signal.SIGTERM, tree)
        tree = await self._wait_gone(tree, grace)
        deadline = self._loop.time() + KILL_WAIT
        # Rounds, because a process may fork while it is being killed.
        while True:
            tree = await asyncio.to_thread(self._find_tree, tree)
            if not tree and not await asyncio.to_thread(self._group_alive):
                break
            if self._loop.time() >= deadline:
                log.warning("pid %s: still alive after SIGKILL: %s", self.pid, sorted(tree))
                break
            self._signal(signal.SIGKILL, tree)
            tree = await self._wait_gone(tree, min(1.0, deadline - self._loop.time()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, deadline - self._loop.time())):
                await asyncio.shield(self._exited)
        # Nothing is left to hold the pipes: let their end arrive before reaping.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, deadline - self._loop.time())):
                await asyncio.shield(self._done)

    def _signal(self, sig: signal.Signals, tree: dict[int, psutil.Process]) -> None:
        by_group = not self._reaped
        if by_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, sig)
        for pid, process in tree.items():
            if by_group and (pid == self._pgid or _in_group(pid, self._pgid)):
                continue  # the group signal reached it
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)  # checks that the pid was not reused

    async def _wait_gone(self, tree: dict[int, psutil.Process], within: float) -> dict[int, psutil.Process]:
        """Wait until the tree and the group are gone, at most `within` seconds; return what is left."""
        deadline = self._loop.time() + within
        delay = 0.002
        while True:
            tree = {pid: p for pid, p in tree.items() if _alive(p)}
            if not tree and self._exited.done() and not await asyncio.to_thread(self._group_alive):
                return tree
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return tree
            # Nothing signals that a process group became empty: poll, briefly and then less often.
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)

    def _group_alive(self) -> bool:
        """Whether a process that is not a zombie remains in the command's group or session.

        Known only while the leader is not reaped; after that the tag and parentage find the rest."""
        return not self._reaped and any(_alive(p) for p in self._members())

    def _members(self) -> list[psutil.Process]:
        me = os.getpid()
        members = []
        for pid in psutil.pids():
            if pid != me and (_in_group(pid, self._pgid) or _in_session(pid, self._pgid)):
                process = _process(pid)
                if process is not None:
                    members.append(process)
        return members

    def _find_tree(self, known: dict[int, psutil.Process]) -> dict[int, psutil.Process]:
        """Live processes of the command: the leader and what is in its group or session or
        carries its tag, with all their descendants (a child that called setsid included)."""
        me = os.getpid()
        live: dict[int, psutil.Process] = {}
        children: dict[int, list[int]] = collections.defaultdict(list)
        roots = [pid for pid in known]
        if not self._exited.done():
            roots.append(self._pgid)
        by_group = not self._reaped
        for process in psutil.process_iter(["ppid", "status", "environ"]):
            pid = process.pid
            info = process.info
            if pid == me or info["status"] in (None, psutil.STATUS_ZOMBIE):
                continue
            previous = known.get(pid)
            if previous is not None and previous != process:
                continue  # the pid was reused by another process
            live[pid] = process
            if info["ppid"] is not None:
                children[info["ppid"]].append(pid)
            if by_group and (_in_group(pid, self._pgid) or _in_session(pid, self._pgid)):
                roots.append(pid)
                continue
            environ = info["environ"]
            if environ is not None and environ.get(TAG_VARIABLE) == self._tag:
                roots.append(pid)
        found: dict[int, psutil.Process] = {}
        pending = roots
        while pending:
            pid = pending.pop()
            if pid in found or pid not in live:
                continue
            found[pid] = live[pid]
            pending.extend(children.get(pid, ()))
        return found

    # -- resources --------------------------------------------------------------------------
    def sample(self) -> ResourceSample | None:
        if self._exited.done():
            return None
        if self._leader is None:
            # not reaped before it exited, so the pid is still the leader's
            self._leader = _process(self._proc.pid)
        leader = self._leader
        if leader is None:
            return None
        try:
            tree = [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return None
        cpu = 0.0
        rss = 0
        seen: dict[int, psutil.Process] = {}
        for process in tree:
            known = self._sampled.get(process.pid)
            if known is not None and known == process:  # same pid and start time
                process = known
            try:
                with process.oneshot():
                    # The first reading of a process is 0.0: it sets the start of the interval.
                    cpu += process.cpu_percent(None)
                    rss += process.memory_info().rss
            except psutil.Error:
                continue
            seen[process.pid] = process
        self._sampled = seen
        return ResourceSample(cpu_percent=cpu, rss_bytes=rss)

    def final_usage(self) -> ResourceUsage | None:
        """CPU% over the whole run and peak RSS of the leader and of the descendants it waited
        for (the peak only when above our own); None until the leader is reaped, or when somebody
        else reaped it."""
        return self._usage


# -- processes ----------------------------------------------------------------------------------
def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _alive(process: psutil.Process) -> bool:
    """Running, or able to run: a zombie has ended, whoever is to reap it."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False


def _in_session(pid: int, sid: int) -> bool:
    try:
        return os.getsid(pid) == sid
    except OSError:
        return False


# -- files ------------------------------------------------------------------------------------
def _base_dir(cwd: str | None) -> Path:
    return Path(cwd if cwd is not None else os.getcwd()).resolve()


def _fetch(path: str, cwd: str | None, dest: Path) -> str:
    base = _base_dir(cwd)
    if not base.is_dir():
        raise FetchError(f"working directory {str(base)!r} does not exist")
    source = (base / path).resolve()
    if not source.is_relative_to(base):
        raise FetchError(f"artifact path {path!r} escapes the working directory")
    if not source.exists():
        raise FetchError(f"artifact {path!r} not found in {str(base)!r}")
    if source.is_dir():
        raise FetchError(f"artifact path {path!r} is a directory")
    if not source.is_file():
        raise FetchError(f"artifact path {path!r} is not a regular file")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    except OSError as exc:
        raise FetchError(f"cannot copy artifact {path!r}: {exc.strerror or exc}") from None
    return str(source)


def _glob(pattern: str, cwd: str | None) -> list[str]:
    base = _base_dir(cwd)
    if not pattern or not base.is_dir():
        return []
    if os.path.isabs(pattern):
        absolute = Path(pattern)
        if not absolute.is_relative_to(base):
            return []
        pattern = str(absolute.relative_to(base))
    matches: list[str] = []
    for match in base.glob(pattern):
        with contextlib.suppress(OSError):
            if match.is_file() and match.resolve().is_relative_to(base):
                matches.append(match.relative_to(base).as_posix())
    return sorted(matches)

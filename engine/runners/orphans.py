"""Processes that outlive their engine: a watchdog stops them when the engine dies, and the next
start stops what is left of the executions it finds lost.

Every local command carries `STEPFLOW_PROCESS_TAG=<execution id>.<random>` in its environment, and
whatever it starts inherits it (a daemon that double-forked out of the group included). The kernel
keeps that record for us in /proc/PID/environ: it is there from the first instant of the process,
costs nothing per command, and cannot go stale; a recycled pid does not carry the tag, so nothing
here signals a process whose tag it has not just read. Stopping a tagged process also signals its
process group (members that dropped the variable, `env -i ...`, die with it): a group cannot be
reused while one of its members lives, and a group holding a command's process holds only what
that command started.

The watchdog. Why not PR_SET_PDEATHSIG: it needs code between fork and exec, either a `preexec_fn`
(CPython then forks instead of vforking: measured here 5.0 ms per spawn on the loop instead of 0.14)
or an exec wrapper (`setpriv --pdeathsig`: one more exec, +2.5 ms per command); it fires when the
forking *thread* exits rather than the process; and above all it reaches only the process that set
it: a step's `sleep 300 &` is reparented and keeps running when its shell is killed. So each engine
process starts, at its first local command, one small helper (this file, run by the same
interpreter with `-I -S`: stdlib only, its start-up off the loop) in a session of its own (Ctrl-C
or a closing terminal reach the engine, not it), with a pipe from the engine as its stdin. The
engine writes `+tag` when it starts a command and `-tag` once the command is over (when the runner
lets go of it: exited and its output closed, which is what a clean shutdown stops). Measured: 18 µs
of the engine per command for both writes, and ~50 µs of the watchdog's CPU (another core) per step
of a workflow; bench/dispatch.py shows no change. When the engine dies, however it dies, the kernel
closes its end of the pipe; the watchdog reads the end of it and stops the processes carrying the
tags still open: SIGTERM, a grace, SIGKILL. At a clean exit nothing is open any more and it just
exits. If the watchdog dies, the next message finds the pipe broken and a new one is started, told
every open tag.

Recovery, for when the watchdog could not do it (killed with the engine, disabled with
STEPFLOW_ORPHAN_WATCHDOG=0): the execution ids found lost lead the tags of their processes, so
`stop_lost_processes` finds them all in /proc and stops them the same way.

Linux only (/proc): elsewhere there is no watchdog and no recovery.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection

log = logging.getLogger(__name__)

#: environment variable carrying a per-command tag, inherited by everything the command starts
TAG_VARIABLE = "STEPFLOW_PROCESS_TAG"
_TAG_ENTRY = os.fsencode(TAG_VARIABLE) + b"="
#: "0" here (in the engine's environment) starts no watchdog
WATCHDOG_VARIABLE = "STEPFLOW_ORPHAN_WATCHDOG"
#: watchdogs started again after one died, before giving up (one that dies at once would loop)
MAX_RESTARTS = 3
#: SIGTERM to SIGKILL, for the commands of an engine that died
WATCHDOG_GRACE = 3.0
#: SIGTERM to SIGKILL, for what is left of lost executions (the start of an engine or `ls` waits)
RECOVERY_GRACE = 1.0
#: how long SIGKILLed processes get to disappear before they are given up on
KILL_WAIT = 5.0
_PROC = "/proc"


def command_tag(execution_id: str | None) -> str:
    """A fresh tag for one command; led by its execution's id, when it has one."""
    random = os.urandom(16).hex()  # as unique as a uuid4, for less
    return f"{execution_id}.{random}" if execution_id else random


def supported() -> bool:
    return os.path.exists(f"{_PROC}/self/environ")


# -- the engine's side ------------------------------------------------------------------------------
class Watchdog:
    """The engine's end of the pipe to its watchdog process (one per engine process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: the tags of the commands running now
        self._tags: set[str] = set()
        self._fd: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        #: what the pipe did not take yet (the watchdog is behind): sent before the next message
        self._pending = b""
        self._restarts = 0
        self._disabled = os.environ.get(WATCHDOG_VARIABLE) == "0" or not supported()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def watch(self, tag: str) -> None:
        if self._disabled:
            return
        with self._lock:
            self._tags.add(tag)
            self._send(b"+%b\n" % tag.encode())

    def forget(self, tag: str) -> None:
        if self._disabled:
            return
        with self._lock:
            if tag in self._tags:
                self._tags.discard(tag)
                self._send(b"-%b\n" % tag.encode())

    def _send(self, message: bytes) -> None:
        if self._fd is None:
            self._start()  # it is sent every open tag, this message's included
            return
        data = self._pending + message if self._pending else message
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except BrokenPipeError:  # it died: a new one, told every open tag
            self._close()
            self._restarts += 1
            if self._restarts > MAX_RESTARTS:
                log.warning("the orphan watchdog keeps dying: commands may outlive a killed engine")
                self._disabled = True
                return
            log.warning("the orphan watchdog (pid %s) is gone: starting another", self.pid)
            self._start()
            return
        self._pending = data[written:]

    def _start(self) -> None:
        if self._process is not None:
            self._process.poll()  # reap the one that died
        read, write = os.pipe()
        env = {k: v for k, v in os.environ.items() if k != TAG_VARIABLE}
        try:
            # -I: its own folder is not on sys.path (engine/runners/docker.py would hide the docker package)
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__],
                stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=env, cwd="/", start_new_session=True,
            )
        except OSError as exc:
            os.close(write)
            log.warning("cannot start the orphan watchdog (%s): commands may outlive a killed engine", exc)
            self._disabled = True
            return
        finally:
            os.close(read)
        os.set_blocking(write, False)
        self._fd = write
        self._pending = b""
        self._send(b"".join(b"+%b\n" % tag.encode() for tag in self._tags))

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


_watchdog: Watchdog | None = None


def watchdog() -> Watchdog:
    """This process's watchdog (its process starts with the first command watched)."""
    global _watchdog
    if _watchdog is None:
        _watchdog = Watchdog()
    return _watchdog


async def stop_lost_processes(execution_ids: Collection[str]) -> int:
    """Stop the processes still carrying the tag of one of these (lost) executions; returns how
    many there were. Waits up to RECOVERY_GRACE (plus KILL_WAIT for what SIGKILL does not end)."""
    if not execution_ids or not supported():
        return 0
    import asyncio

    prefixes = tuple(f"{execution_id}." for execution_id in execution_ids)
    count = await asyncio.to_thread(stop_tagged, lambda tag: tag.startswith(prefixes), RECOVERY_GRACE)
    if count:
        log.warning("stopped %d process(es) left running by lost execution(s)", count)
    return count


# -- finding and stopping tagged processes ---------------------------------------------------------
def tag_of(pid: int) -> str | None:
    """The process's STEPFLOW_PROCESS_TAG, as it was given at its exec (None: none, gone, or not
    ours to read). A zombie has no environment left: it reads as untagged."""
    try:
        with open(f"{_PROC}/{pid}/environ", "rb") as file:
            environ = file.read()
    except OSError:
        return None
    if environ.startswith(_TAG_ENTRY):
        start = len(_TAG_ENTRY)
    else:
        at = environ.find(b"\0" + _TAG_ENTRY)
        if at < 0:
            return None
        start = at + 1 + len(_TAG_ENTRY)
    end = environ.find(b"\0", start)
    return environ[start : end if end >= 0 else len(environ)].decode("ascii", "replace")


def tagged_processes(match: Callable[[str], bool]) -> list[int]:
    """Pids of the live processes whose tag `match` accepts (never this process)."""
    me = os.getpid()
    found = []
    for name in os.listdir(_PROC):
        if name.isdigit() and int(name) != me:
            tag = tag_of(int(name))
            if tag is not None and match(tag):
                found.append(int(name))
    return found


def _signal_tagged(match: Callable[[str], bool], sig: signal.Signals) -> int:
    """Send `sig` to each tagged process and its process group; returns how many were reached."""
    own_group = os.getpgrp()
    reached = 0
    for pid in tagged_processes(match):
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        except (AttributeError, OSError):  # no pidfd here: the checks below are by pid alone
            pidfd = None
        try:
            # Read again with the process pinned: if the signal through the pidfd reaches it, the
            # process that was read is the one signalled (its pid was not reused in between).
            tag = tag_of(pid)
            if tag is None or not match(tag):
                continue
            try:
                group = os.getpgid(pid)
                if pidfd is not None:
                    signal.pidfd_send_signal(pidfd, sig)
                else:
                    os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue
            reached += 1
            if group != own_group:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, sig)
        finally:
            if pidfd is not None:
                os.close(pidfd)
    return reached


def stop_tagged(match: Callable[[str], bool], grace: float) -> int:
    """SIGTERM to the tagged processes (and their groups), up to `grace` seconds for them to go,
    then SIGKILL, in rounds (one may fork while it is being killed). Returns how many got SIGTERM."""
    count = _signal_tagged(match, signal.SIGTERM)
    if not count:
        return 0
    deadline = time.monotonic() + grace
    delay = 0.005
    # Nothing signals that a process ended when it is not our child: poll, briefly, then less often.
    while tagged_processes(match):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.1)
    else:
        return count
    end = time.monotonic() + KILL_WAIT
    while _signal_tagged(match, signal.SIGKILL) and time.monotonic() < end:
        time.sleep(0.05)
    return count


# -- the watchdog process ---------------------------------------------------------------------------
def main() -> None:
    """Keep the open tags the engine sends; when its end of the pipe closes, stop their processes."""
    tags: set[str] = set()
    buffer = b""
    while True:
        try:
            chunk = os.read(0, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            tag = line[1:].decode("ascii", "replace")
            if line.startswith(b"+"):
                tags.add(tag)
            else:
                tags.discard(tag)
    if tags:
        stop_tagged(tags.__contains__, WATCHDOG_GRACE)


if __name__ == "__main__":
    main()

"""One command on an SSH host, and the shell text that starts and stops it there.

A command runs on the host inside a small POSIX `sh` wrapper (`remote_command`) that changes
directory, exports the environment (servers usually refuse SSH's setenv requests) and starts the
command with `setsid`, so that it leads a session and process group of its own. The group leader
first prints a header line `stepflow:<nonce>:pid <pgid>` on stdout, which `SshRunner.start` reads
and strips; anything a login script printed before it is discarded. The wrapper waits for the
command and exits with its status, which `wait` for a signal gives as 128 + the signal number, as
the shell does. Stopping a command sends SIGTERM to the remote group through a second channel on
the same connection (`stop_script`), waits up to the grace period on the host, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import shlex
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncssh

from engine.model import Stream
from engine.runners.base import CommandSpec, ResourceSample, ResourceUsage, SpawnError

if TYPE_CHECKING:
    from engine.runners.ssh import SshRunner

log = logging.getLogger(__name__)

#: largest chunk read from a channel at once
READ_CHUNK = 65536
#: how long the header line may take once the channel is open (login scripts run first)
HEADER_TIMEOUT = 30.0
#: at most this much output before the header line (a chatty login script) is skipped
HEADER_LIMIT = 65536
#: how long SIGKILLed processes get to disappear on the host
KILL_WAIT = 5.0
#: how often the host checks whether the process group is gone while stopping it
KILL_POLL = 0.05

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class SshCommand:
    """One command started on an SSH host."""

    def __init__(
        self,
        runner: SshRunner,
        conn: asyncssh.SSHClientConnection,
        process: asyncssh.SSHClientProcess[bytes],
        nonce: str,
        own_conn: asyncssh.SSHClientConnection | None,
    ) -> None:
        self._runner = runner
        self._conn = conn
        self._process = process
        self._nonce = nonce.encode()
        self._own_conn = own_conn
        #: stdout read along with the header line, given out first
        self._early = b""
        self._pgid: int | None = None
        self._group_gone = False
        self._terminate_lock = asyncio.Lock()
        self._closed = asyncio.ensure_future(self._watch_closed())

    async def _watch_closed(self) -> None:
        await self._process.wait_closed()
        self._runner._running.discard(self)
        if self._own_conn is not None:
            self._own_conn.close()

    @property
    def pid(self) -> int | None:
        """The process group id of the command on the host (not a local pid)."""
        return self._pgid

    async def _read_header(self, spec: CommandSpec) -> None:
        self._process.stdin.write_eof()
        prefix = b"stepflow:" + self._nonce + b":"
        buffer = b""
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                while True:
                    found = buffer.find(prefix)
                    end = buffer.find(b"\n", found) if found >= 0 else -1
                    if end >= 0:
                        break
                    chunk = await self._process.stdout.read(READ_CHUNK)
                    if not chunk:
                        await self._fail(spec, None)
                    buffer += chunk
                    if len(buffer) > HEADER_LIMIT + len(prefix) + 32 and found < 0:
                        buffer = buffer[-(len(prefix) + 32) :]
        except TimeoutError:
            raise SpawnError(
                f"cannot start the command on {self._runner.where}: "
                f"the host did not start it within {HEADER_TIMEOUT:g}s"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise SpawnError(f"cannot start the command on {self._runner.where}: {reason(exc)}") from None
        header = buffer[found + len(prefix) : end].decode(errors="replace")
        self._early = buffer[end + 1 :]
        if header.startswith("pid "):
            self._pgid = int(header[4:])
            return
        await self._fail(spec, header)

    async def _fail(self, spec: CommandSpec, header: str | None) -> None:
        where = self._runner.where
        if header == "cwd":
            raise SpawnError(f"working directory {spec.cwd!r} does not exist on {where}")
        if header == "shell":
            raise SpawnError(f"cannot start shell {spec.shell!r} on {where}: command not found")
        if header == "setsid":
            raise SpawnError(f"cannot start the command on {where}: setsid is not installed there")
        with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
            async with asyncio.timeout(5):
                await self._process.wait_closed()
        stderr = b""
        with contextlib.suppress(OSError, asyncssh.Error):
            stderr = await read_available(self._process.stderr)
        detail = stderr.decode(errors="replace").strip().splitlines()
        status = self._process.returncode
        reason = detail[-1] if detail else f"the remote shell exited with status {status}"
        raise SpawnError(f"cannot start the command on {where}: {reason}")

    def _abandon(self) -> None:
        self._process.close()
        self._closed.cancel()
        if self._own_conn is not None:
            self._own_conn.close()

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        if self._early:
            early, self._early = self._early, b""
            yield Stream.STDOUT, early
        readers = {Stream.STDOUT: self._process.stdout, Stream.STDERR: self._process.stderr}
        pending: dict[asyncio.Task[bytes], Stream] = {}
        try:
            for stream, reader in readers.items():
                pending[asyncio.ensure_future(_read(reader))] = stream
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    stream = pending.pop(task)
                    data = task.result()
                    if data:
                        pending[asyncio.ensure_future(_read(readers[stream]))] = stream
                        yield stream, data
        finally:
            for task in pending:
                task.cancel()

    async def wait(self) -> int:
        await asyncio.shield(self._closed)
        code = self._process.returncode
        if code is None:
            # The connection was lost before the host said how the command ended.
            return 255
        return 128 - code if code < 0 else code

    async def terminate(self, grace: float) -> None:
        async with self._terminate_lock:
            if self._pgid is None or self._group_gone:
                return
            script = stop_script(self._pgid, grace)
            try:
                async with asyncio.timeout(grace + KILL_WAIT + self._runner.connect_timeout):
                    await self._conn.run("exec sh -c " + shlex.quote(script), encoding=None)
            except (TimeoutError, OSError, asyncssh.Error) as exc:
                log.warning(
                    "%s: cannot stop process group %s: %s", self._runner.where, self._pgid, reason(exc)
                )
            else:
                # The number is free again: it must never be signalled after this.
                self._group_gone = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT):
                    await asyncio.shield(self._closed)
            if not self._closed.done():
                self._process.close()

    def sample(self) -> ResourceSample | None:
        return None

    def final_usage(self) -> ResourceUsage | None:
        return None


async def _read(reader: asyncssh.SSHReader[bytes]) -> bytes:
    try:
        return await reader.read(READ_CHUNK)
    except (OSError, asyncssh.Error):
        return b""  # the channel broke: this stream ends; wait() tells the status


async def read_available(reader: asyncssh.SSHReader[bytes]) -> bytes:
    data = b""
    while chunk := await reader.read(READ_CHUNK):
        data += chunk
    return data


def reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def stop_script(pgid: int, grace: float) -> str:
    """Shell text that stops process group `pgid` on the host: SIGTERM, up to `grace` seconds,
    SIGKILL, and returns once no process of the group is left (zombies aside: an init that reaps
    late must not make us wait)."""
    steps = max(0, math.ceil(grace / KILL_POLL))
    kills = math.ceil(KILL_WAIT / KILL_POLL)
    return f"""\
pg={pgid}
alive() {{
    kill -0 -$pg 2>/dev/null || return 1
    table=$(ps -e -o pgid= -o stat= 2>/dev/null) || return 0
    echo "$table" | awk -v pg=$pg '$1 == pg && $2 !~ /^Z/ {{ found = 1 }} END {{ exit !found }}'
}}
kill -TERM -$pg 2>/dev/null || exit 0
i=0
while alive; do
    if [ $i -ge {steps} ]; then kill -KILL -$pg 2>/dev/null; break; fi
    sleep {KILL_POLL}; i=$((i + 1))
done
i=0
while [ $i -lt {kills} ] && alive; do sleep {KILL_POLL}; i=$((i + 1)); done
"""


def remote_command(spec: CommandSpec, nonce: str) -> str:
    """The command line sent to the host: a POSIX sh wrapper (see the module's docstring)."""
    header = f"stepflow:{nonce}:"
    lines: list[str] = []
    if spec.cwd is not None:
        lines.append(f"cd -- {shlex.quote(spec.cwd)} 2>/dev/null || {{ echo '{header}cwd'; exit 126; }}")
    lines.append(f"command -v setsid >/dev/null 2>&1 || {{ echo '{header}setsid'; exit 127; }}")
    for name, value in spec.env.items():
        if not _ENV_NAME.match(name):
            raise SpawnError(f"invalid environment variable name {name!r}")
        lines.append(f"export {name}={shlex.quote(value)}")
    if spec.argv is not None:
        if not spec.argv:
            raise SpawnError("cannot start an empty command")
        inner = "exec " + shlex.join(spec.argv)
    elif spec.script is not None:
        script = shlex.quote(spec.script)
        shell = spec.shell
        if shell == "bash":
            inner = f"if command -v bash >/dev/null 2>&1; then exec bash -c {script}; else exec sh -c {script}; fi"
        else:
            lines.append(
                f"command -v {shlex.quote(shell)} >/dev/null 2>&1 || {{ echo '{header}shell'; exit 127; }}"
            )
            inner = f"exec {shlex.quote(shell)} -c {script}"
    else:
        raise SpawnError("cannot start a command without argv or script")
    leader = f'echo "{header}pid $$"; {inner}'
    lines.append(f"setsid sh -c {shlex.quote(leader)} </dev/null &")
    lines.append("wait $!")
    return "exec sh -c " + shlex.quote("\n".join(lines))

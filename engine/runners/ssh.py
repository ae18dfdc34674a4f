"""Run commands on SSH hosts, with asyncssh.

One connection per (host, port, user) is shared by every command and every runner of the event loop
(`SshConnectionPool`); ~/.ssh/config, the agent and key files are honoured as asyncssh does.

A command runs on the host inside a small POSIX `sh` wrapper that changes directory, exports the
environment (servers usually refuse SSH's setenv requests) and starts the command with `setsid`, so
that it leads a session and process group of its own. The group leader first prints a header line
`stepflow:<nonce>:pid <pgid>` on stdout, which `start` reads and strips; anything a login script
printed before it is discarded. The wrapper waits for the command and exits with its status, which
`wait` for a signal gives as 128 + the signal number, as the shell does. Stopping a command sends
SIGTERM to the remote group through a second channel on the same connection, waits up to the
grace period on the host, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import posixpath
import re
import shlex
import socket
import stat
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from engine.model import Stream
from engine.runners.base import CommandSpec, FetchError, ResourceSample, SpawnError

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
#: grace given to commands still running when the runner is closed
CLOSE_GRACE = 1.0

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

ConnectionKey = tuple[str, int | None, str | None]


# -- connections ------------------------------------------------------------------------------
@dataclass(eq=False)
class _Pooled:
    connecting: asyncio.Task[asyncssh.SSHClientConnection]
    users: weakref.WeakSet[object] = field(default_factory=weakref.WeakSet)


class SshConnectionPool:
    """Open SSH connections, one per (host, port, user) and event loop, shared by runners.

    A connection is closed when the last runner using it releases it (`SshRunner.close`).
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ConnectionKey, _Pooled]] = (
            weakref.WeakKeyDictionary()
        )

    def _entries(self) -> dict[ConnectionKey, _Pooled]:
        return self._by_loop.setdefault(asyncio.get_running_loop(), {})

    async def get(
        self,
        key: ConnectionKey,
        user: object,
        connect: Callable[[], Awaitable[asyncssh.SSHClientConnection]],
    ) -> asyncssh.SSHClientConnection:
        """The pooled connection for `key`, opened with `connect` when there is none (or it
        closed); `user` (a runner) holds it until `release`."""
        entries = self._entries()
        entry = entries.get(key)
        if entry is not None and entry.connecting.done():
            if entry.connecting.cancelled() or entry.connecting.exception() is not None:
                entry = None
            elif entry.connecting.result().is_closed():
                entry = None
        if entry is None:
            entry = _Pooled(asyncio.ensure_future(connect()))
            entries[key] = entry
        entry.users.add(user)
        try:
            return await asyncio.shield(entry.connecting)
        except BaseException:
            if entry.connecting.done() and entries.get(key) is entry:
                del entries[key]
            raise

    def discard(self, key: ConnectionKey, conn: asyncssh.SSHClientConnection) -> None:
        """Forget `conn` (found broken), so that the next `get` opens a new connection."""
        entries = self._entries()
        entry = entries.get(key)
        if entry is not None and entry.connecting.done() and not entry.connecting.cancelled():
            if entry.connecting.exception() is None and entry.connecting.result() is conn:
                del entries[key]
        conn.close()

    async def release(self, user: object) -> None:
        """`user` no longer needs its connections; close those nobody else uses."""
        entries = self._entries()
        closing: list[asyncssh.SSHClientConnection] = []
        for key, entry in list(entries.items()):
            if user not in entry.users:
                continue
            entry.users.discard(user)
            if len(entry.users) == 0:
                del entries[key]
                if not entry.connecting.done():
                    entry.connecting.cancel()
                    with contextlib.suppress(BaseException):
                        await entry.connecting
                elif not entry.connecting.cancelled() and entry.connecting.exception() is None:
                    closing.append(entry.connecting.result())
        for conn in closing:
            conn.close()
            await conn.wait_closed()


#: the pool runners share unless they are given one
DEFAULT_POOL = SshConnectionPool()


# -- the runner -------------------------------------------------------------------------------
class SshRunner:
    """Runs commands on one SSH host.

    `port`, `user` and keys left out come from ~/.ssh/config (then 22, the local user, the agent
    and the default key files). `known_hosts` is a file; None means asyncssh's default
    (~/.ssh/known_hosts, or what ~/.ssh/config names). An unknown host key is refused unless
    `trust_on_first_use`, which then records it in `known_hosts` (or ~/.ssh/known_hosts); a key
    that differs from the recorded one is always refused. `check_host_keys=False` accepts any host
    key (a workflow's `known_hosts: null`). `jump_host` is `[user@]host[:port]`.
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        user: str | None = None,
        key: str | None = None,
        password: str | None = None,
        known_hosts: str | None = None,
        trust_on_first_use: bool = False,
        jump_host: str | None = None,
        connect_timeout: float = 10,
        pool: SshConnectionPool | None = None,
        check_host_keys: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.key = os.path.expanduser(key) if key else None
        self.password = password
        self.known_hosts = os.path.expanduser(known_hosts) if known_hosts else None
        self.trust_on_first_use = trust_on_first_use
        self.check_host_keys = check_host_keys
        self.jump_host = jump_host
        self.connect_timeout = connect_timeout
        self._pool = pool if pool is not None else DEFAULT_POOL
        self._running: set[SshCommand] = set()

    @property
    def where(self) -> str:
        """`user@host:port` as people write it, for messages."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port or 22}"

    @property
    def _key(self) -> ConnectionKey:
        return (self.host, self.port, self.user)

    # -- connecting -------------------------------------------------------------------------
    async def _connection(self) -> asyncssh.SSHClientConnection:
        return await self._pool.get(self._key, self, self._connect)

    def _known_hosts_file(self) -> str:
        return self.known_hosts or os.path.expanduser("~/.ssh/known_hosts")

    def _host_is_known(self) -> bool:
        """Whether a known_hosts file holds a key (or CA) for this host and port."""
        path = self._known_hosts_file()
        try:
            known = asyncssh.read_known_hosts(path)
        except (OSError, ValueError):
            return False
        port = self.port if self.port not in (None, 22) else None
        matched = known.match(self.host, "", port)
        return bool(matched[0] or matched[1])

    async def _connect(self) -> asyncssh.SSHClientConnection:
        options: dict[str, object] = {"connect_timeout": self.connect_timeout, "keepalive_interval": 30}
        if self.port is not None:
            options["port"] = self.port
        if self.user is not None:
            options["username"] = self.user
        if self.key is not None:
            if not await asyncio.to_thread(os.path.isfile, self.key):
                raise SpawnError(f"cannot connect to {self.where}: key file {self.key!r} not found")
            options["client_keys"] = [self.key]
        if self.password is not None:
            options["password"] = self.password
        if self.jump_host is not None:
            options["tunnel"] = self.jump_host
        record_host_key = False
        if not self.check_host_keys:
            options["known_hosts"] = None
        elif self.trust_on_first_use and not self._host_is_known():
            options["known_hosts"] = None
            record_host_key = True
        elif self.known_hosts is not None:
            # parsed once per file version: a fan-out to 100 hosts would otherwise parse it 100 times
            options["known_hosts"] = await asyncio.to_thread(_parsed_known_hosts, self.known_hosts)
        try:
            async with asyncio.timeout(self.connect_timeout + 5):
                conn = await asyncssh.connect(self.host, **options)  # type: ignore[arg-type]
        except SpawnError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message for people
            raise SpawnError(self._connect_error(exc)) from None
        if record_host_key:
            self._record_host_key(conn)
        return conn

    def _connect_error(self, exc: BaseException) -> str:
        where = f"cannot connect to {self.where}"
        port = self.port or 22
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            if self._host_is_known():
                return (
                    f"host key for {self.host}:{port} does not match known_hosts (possible man-in-the-middle)"
                )
            return (
                f"host key for {self.host}:{port} is unknown (not in {self._known_hosts_file()}); "
                f"add it (ssh-keyscan -p {port} {self.host}) or enable trust_on_first_use"
            )
        if isinstance(exc, asyncssh.PermissionDenied):
            return f"{where}: authentication failed"
        if isinstance(exc, asyncssh.KeyImportError):
            return f"{where}: cannot use key file {self.key!r}: {exc}"
        if isinstance(exc, asyncssh.DisconnectError):
            return f"{where}: {exc.reason or exc}"
        if isinstance(exc, TimeoutError):
            return f"{where}: timed out after {self.connect_timeout:g}s"
        if isinstance(exc, ConnectionRefusedError):
            return f"{where}: connection refused"
        if isinstance(exc, socket.gaierror):
            return f"{where}: unknown host ({exc.strerror})"
        if isinstance(exc, OSError):
            return f"{where}: {(exc.strerror or str(exc)).lower()}"
        return f"{where}: {exc}"

    def _record_host_key(self, conn: asyncssh.SSHClientConnection) -> None:
        key = conn.get_server_host_key()
        if key is None:
            return
        port = self.port or 22
        name = self.host if port == 22 else f"[{self.host}]:{port}"
        path = Path(self._known_hosts_file())
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with path.open("a") as file:
                file.write(f"{name} {key.export_public_key().decode().strip()}\n")
        except OSError as exc:
            log.warning("cannot record the host key of %s in %s: %s", name, path, exc)
        else:
            log.info("trusted the host key of %s on first use (recorded in %s)", name, path)

    # -- commands ---------------------------------------------------------------------------
    async def start(self, spec: CommandSpec) -> SshCommand:
        nonce = uuid.uuid4().hex[:16]
        command = _remote_command(spec, nonce)
        conn = await self._connection()
        own_conn: asyncssh.SSHClientConnection | None = None
        try:
            process = await conn.create_process(command, encoding=None)
        except asyncssh.ChannelOpenError as exc:
            if conn.is_closed():
                # The pooled connection died since its last use (host rebooted, network): retry once.
                self._pool.discard(self._key, conn)
                conn = await self._connection()
            else:
                # The server limits sessions per connection (OpenSSH: MaxSessions 10): this
                # command gets a connection of its own.
                log.info("%s: %s; opening another connection", self.where, exc.reason)
                conn = own_conn = await self._connect()
            try:
                process = await conn.create_process(command, encoding=None)
            except (OSError, asyncssh.Error) as exc2:
                if own_conn is not None:
                    own_conn.close()
                raise SpawnError(f"cannot start a command on {self.where}: {_reason(exc2)}") from None
        except (OSError, asyncssh.Error) as exc:
            self._pool.discard(self._key, conn)
            raise SpawnError(f"cannot start a command on {self.where}: {_reason(exc)}") from None
        running = SshCommand(self, conn, process, nonce, own_conn)
        try:
            await running._read_header(spec)
        except BaseException:
            running._abandon()
            raise
        self._running.add(running)
        return running

    # -- files ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _sftp(self) -> AsyncIterator[asyncssh.SFTPClient]:
        try:
            conn = await self._connection()
        except SpawnError as exc:
            raise FetchError(str(exc)) from None
        try:
            sftp = await conn.start_sftp_client()
        except (OSError, asyncssh.Error) as exc:
            raise FetchError(f"cannot open SFTP on {self.where}: {_reason(exc)}") from None
        async with sftp:
            yield sftp

    async def _base_dir(self, sftp: asyncssh.SFTPClient, cwd: str | None) -> str:
        try:
            base = await sftp.realpath(cwd or ".")
            if not await sftp.isdir(base):
                raise FetchError(f"working directory {cwd!r} does not exist on {self.where}")
        except asyncssh.SFTPError:
            raise FetchError(f"working directory {cwd!r} does not exist on {self.where}") from None
        return base

    async def fetch(self, path: str, cwd: str | None, dest: Path) -> str:
        async with self._sftp() as sftp:
            base = await self._base_dir(sftp, cwd)
            joined = posixpath.normpath(posixpath.join(base, path))
            if not _inside(joined, base):
                raise FetchError(f"artifact path {path!r} escapes the working directory")
            try:
                source = await sftp.realpath(joined)
                attrs = await sftp.stat(source)
            except asyncssh.SFTPNoSuchFile:
                raise FetchError(f"artifact {path!r} not found in {base!r} on {self.where}") from None
            except asyncssh.SFTPError as exc:
                raise FetchError(f"cannot read artifact {path!r} on {self.where}: {exc.reason}") from None
            if not _inside(source, base):
                raise FetchError(f"artifact path {path!r} escapes the working directory")
            mode = attrs.permissions or 0
            if stat.S_ISDIR(mode):
                raise FetchError(f"artifact path {path!r} is a directory")
            if not stat.S_ISREG(mode):
                raise FetchError(f"artifact path {path!r} is not a regular file")
            try:
                await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
                await sftp.get(source, str(dest))
            except (OSError, asyncssh.SFTPError) as exc:
                raise FetchError(f"cannot copy artifact {path!r} from {self.where}: {_reason(exc)}") from None
            return source

    async def glob(self, pattern: str, cwd: str | None) -> list[str]:
        if not pattern:
            return []
        async with self._sftp() as sftp:
            try:
                base = await self._base_dir(sftp, cwd)
            except FetchError:
                return []
            if posixpath.isabs(pattern):
                if not _inside(posixpath.normpath(pattern), base) or posixpath.normpath(pattern) == base:
                    return []
                pattern = posixpath.relpath(pattern, base)
            await sftp.chdir(base)
            try:
                found = await sftp.glob(pattern)
            except asyncssh.SFTPNoSuchFile:
                return []
            except asyncssh.SFTPError as exc:
                raise FetchError(f"cannot list {pattern!r} on {self.where}: {exc.reason}") from None
            matches: set[str] = set()
            for match in found:
                absolute = posixpath.normpath(posixpath.join(base, match))
                try:
                    attrs = await sftp.stat(absolute)
                    real = await sftp.realpath(absolute)
                except asyncssh.SFTPError:
                    continue
                if stat.S_ISREG(attrs.permissions or 0) and _inside(real, base) and _inside(absolute, base):
                    matches.add(posixpath.relpath(absolute, base))
            return sorted(matches)

    async def close(self) -> None:
        """Stop the commands still running, and release the connection."""
        running = list(self._running)
        if running:
            await asyncio.gather(
                *(command.terminate(CLOSE_GRACE) for command in running), return_exceptions=True
            )
        await self._pool.release(self)


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
            raise SpawnError(f"cannot start the command on {self._runner.where}: {_reason(exc)}") from None
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
            stderr = await _read_available(self._process.stderr)
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
            script = _stop_script(self._pgid, grace)
            try:
                async with asyncio.timeout(grace + KILL_WAIT + self._runner.connect_timeout):
                    await self._conn.run("exec sh -c " + shlex.quote(script), encoding=None)
            except (TimeoutError, OSError, asyncssh.Error) as exc:
                log.warning(
                    "%s: cannot stop process group %s: %s", self._runner.where, self._pgid, _reason(exc)
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


# -- helpers ----------------------------------------------------------------------------------
async def _read(reader: asyncssh.SSHReader[bytes]) -> bytes:
    try:
        return await reader.read(READ_CHUNK)
    except (OSError, asyncssh.Error):
        return b""  # the channel broke: this stream ends; wait() tells the status


async def _read_available(reader: asyncssh.SSHReader[bytes]) -> bytes:
    data = b""
    while chunk := await reader.read(READ_CHUNK):
        data += chunk
    return data


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _stop_script(pgid: int, grace: float) -> str:
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


def _remote_command(spec: CommandSpec, nonce: str) -> str:
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


_KNOWN_HOSTS_CACHE: dict[str, tuple[float, int, object]] = {}


def _parsed_known_hosts(path: str) -> object:
    """The parsed known_hosts file, cached by path, mtime and size; a missing file trusts no key."""
    try:
        st = os.stat(path)
    except OSError:
        return b""
    cached = _KNOWN_HOSTS_CACHE.get(path)
    if cached is not None and cached[0] == st.st_mtime and cached[1] == st.st_size:
        return cached[2]
    parsed = asyncssh.read_known_hosts(path)
    _KNOWN_HOSTS_CACHE[path] = (st.st_mtime, st.st_size, parsed)
    return parsed

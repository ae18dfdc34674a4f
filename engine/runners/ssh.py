"""Run commands on SSH hosts, with asyncssh.

One connection per (host, port, user) is shared by every command and every runner of the event loop
(`ssh_pool.SshConnectionPool`); ~/.ssh/config, the agent and key files are honoured as asyncssh
does. How a command is started and stopped on the host: `ssh_command`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import re
import socket
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh

from engine.runners.base import CommandSpec, FetchError, SpawnError
from engine.runners.ssh_command import SshCommand, reason, remote_command
from engine.runners.ssh_config import (
    DEFAULT_CONNECT_TIMEOUT,
    SSH_CONFIG,
    SshDestination,
    given_destination,
    resolve_destination,
)
from engine.runners.ssh_pool import DEFAULT_POOL, ConnectionKey, SshConnectionPool

log = logging.getLogger(__name__)

#: grace given to commands still running when the runner is closed
CLOSE_GRACE = 1.0
#: ciphers put before asyncssh's defaults (unless ~/.ssh/config chooses): asyncssh builds a new
#: cipher context for every packet of chacha20-poly1305, its first choice, which makes it cost
#: about five times as much CPU as AES-GCM, on both ends, for each of the hosts of a fan-out
PREFERRED_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
#: seconds between keepalives unless ~/.ssh/config says (ServerAliveInterval)
KEEPALIVE_INTERVAL = 30


class SshRunner:
    """Runs commands on one SSH host.

    `port`, `user`, keys, `jump_host` and `connect_timeout` left out come from ~/.ssh/config (then
    22, the local user, the agent and the default key files, none, 10 s), as does the address of a
    `Host` alias. `known_hosts` is a file; None means what ~/.ssh/config names (UserKnownHostsFile),
    else ~/.ssh/known_hosts. An unknown host key is refused unless
    `trust_on_first_use`, which then records it in that file; a key
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
        connect_timeout: float | None = None,
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
        self._given_timeout = connect_timeout
        self.connect_timeout = connect_timeout or DEFAULT_CONNECT_TIMEOUT
        #: where the connection goes, once ~/.ssh/config has been read (at the first connection)
        self._destination: SshDestination | None = None
        self._pool = pool if pool is not None else DEFAULT_POOL
        self._running: set[SshCommand] = set()

    @property
    def destination(self) -> SshDestination:
        """Where the connection goes: the target's values, and ~/.ssh/config's once it was read."""
        return self._destination or given_destination(self.host, self.port, self.user)

    @property
    def where(self) -> str:
        """`user@host:port` as connected to, for messages."""
        return self.destination.where

    @property
    def _key(self) -> ConnectionKey:
        return (self.host, self.port, self.user)

    # -- connecting -------------------------------------------------------------------------
    async def _connection(self) -> asyncssh.SSHClientConnection:
        return await self._pool.get(self._key, self, self._connect)

    def _known_hosts_files(self) -> tuple[str, ...]:
        if self.known_hosts is not None:
            return (self.known_hosts,)
        return self.destination.known_hosts or ()

    def _known_hosts_file(self) -> str:
        """The file an unknown host key is recorded in (trust_on_first_use), named in messages."""
        files = self._known_hosts_files()
        return files[0] if files else os.path.expanduser("~/.ssh/known_hosts")

    def _host_is_known(self) -> bool:
        """Whether a known_hosts file holds a key (or CA) for this host and port."""
        files = [path for path in self._known_hosts_files() if os.path.isfile(path)]
        if not files:
            return False
        try:
            known = asyncssh.read_known_hosts(files)
        except (OSError, ValueError):
            return False
        dest = self.destination
        port = dest.port if dest.port != 22 else None
        matched = known.match(dest.host_key_alias or dest.hostname, "", port)
        return bool(matched[0] or matched[1])

    async def _connect(self) -> asyncssh.SSHClientConnection:
        # only what the target names is passed: asyncssh takes the rest from ~/.ssh/config
        if self._destination is None:
            self._destination = await asyncio.to_thread(resolve_destination, self.host, self.port, self.user)
        dest = self._destination
        if self._given_timeout is None and dest.connect_timeout is not None:
            self.connect_timeout = dest.connect_timeout
        options: dict[str, object] = {"connect_timeout": self.connect_timeout}
        if not dest.keepalive_configured:
            options["keepalive_interval"] = KEEPALIVE_INTERVAL
        if self.port is not None:
            options["port"] = self.port
        if self.user is not None:
            options["username"] = self.user
        key_found, config_names_ciphers = await asyncio.to_thread(_check_client_files, self.key)
        if self.key is not None:
            if not key_found:
                raise SpawnError(f"cannot connect to {self.where}: key file {self.key!r} not found")
            options["client_keys"] = [self.key]
        if not config_names_ciphers:
            options["encryption_algs"] = PREFERRED_CIPHERS
        if self.password is not None:
            options["password"] = self.password
        if self.jump_host is not None:
            options["tunnel"] = self.jump_host
        record_host_key = False
        if not self.check_host_keys:
            options["known_hosts"] = None
        elif self.trust_on_first_use and not await asyncio.to_thread(self._host_is_known):
            options["known_hosts"] = None
            record_host_key = True
        elif self.known_hosts is not None or dest.known_hosts is not None:
            # parsed once per file version: a fan-out to 100 hosts would otherwise parse it 100 times
            options["known_hosts"] = await asyncio.to_thread(_parsed_known_hosts, self._known_hosts_files())
        # else `UserKnownHostsFile none` in ~/.ssh/config: asyncssh checks no host key, as ssh does
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
        dest = self.destination
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            if self._host_is_known():
                return (
                    f"host key for {dest.hostname}:{dest.port} does not match known_hosts "
                    "(possible man-in-the-middle)"
                )
            return (
                f"host key for {dest.hostname}:{dest.port} is unknown (not in {self._known_hosts_file()}); "
                f"add it (ssh-keyscan -p {dest.port} {dest.hostname}) or enable trust_on_first_use"
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
        name = self.destination.key_name
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
        command = remote_command(spec, nonce)
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
                raise SpawnError(f"cannot start a command on {self.where}: {reason(exc2)}") from None
        except (OSError, asyncssh.Error) as exc:
            self._pool.discard(self._key, conn)
            raise SpawnError(f"cannot start a command on {self.where}: {reason(exc)}") from None
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
            raise FetchError(f"cannot open SFTP on {self.where}: {reason(exc)}") from None
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
                raise FetchError(f"cannot copy artifact {path!r} from {self.where}: {reason(exc)}") from None
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
                absolute = posixpath.normpath(posixpath.join(base, os.fsdecode(match)))
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


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


_KNOWN_HOSTS_CACHE: dict[tuple[str, ...], tuple[tuple[tuple[float, int], ...], object]] = {}


def _parsed_known_hosts(paths: tuple[str, ...]) -> object:
    """The parsed known_hosts files, cached by paths, mtimes and sizes; missing files trust no key."""
    versions: list[tuple[float, int]] = []
    present: list[str] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        versions.append((st.st_mtime, st.st_size))
        present.append(path)
    if not present:
        return b""
    cached = _KNOWN_HOSTS_CACHE.get(paths)
    if cached is not None and cached[0] == tuple(versions):
        return cached[1]
    parsed = asyncssh.read_known_hosts(present)
    _KNOWN_HOSTS_CACHE[paths] = (tuple(versions), parsed)
    return parsed


_CONFIG_CACHE: dict[str, tuple[float, int, bool]] = {}
_CIPHERS_OR_INCLUDE = re.compile(r"^\s*(ciphers|include)\b", re.IGNORECASE | re.MULTILINE)


def _check_client_files(key: str | None) -> tuple[bool, bool]:
    """Whether the key file exists (when one is named), and whether the user's SSH configuration
    chooses ciphers (or includes other files, which might); the latter cached by mtime and size."""
    key_found = key is None or os.path.isfile(key)
    path = os.path.expanduser(SSH_CONFIG)
    try:
        st = os.stat(path)
    except OSError:
        return key_found, False
    cached = _CONFIG_CACHE.get(path)
    if cached is not None and cached[0] == st.st_mtime and cached[1] == st.st_size:
        return key_found, cached[2]
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return key_found, False
    chooses = bool(_CIPHERS_OR_INCLUDE.search(text))
    _CONFIG_CACHE[path] = (st.st_mtime, st.st_size, chooses)
    return key_found, chooses

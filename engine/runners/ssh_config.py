"""Where an SSH target really goes: what the target leaves out, ~/.ssh/config fills in.

asyncssh reads ~/.ssh/config itself when it connects; this module reads it the same way (asyncssh's
own parser) so that messages, `stepflow targets list`, and the host key checks made around the
connection name the host, port and user the connection uses, not a guessed port 22.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
from asyncssh.config import SSHClientConfig

#: the client configuration asyncssh reads by default
SSH_CONFIG = "~/.ssh/config"
#: the port SSH uses when neither the target nor the configuration names one
DEFAULT_PORT = 22
#: seconds to wait for a connection when neither the target nor ~/.ssh/config (ConnectTimeout) says
DEFAULT_CONNECT_TIMEOUT = 10.0
#: the known_hosts file asyncssh uses when neither the target nor the configuration names one
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def _default_known_hosts() -> tuple[str, ...]:
    return (os.path.expanduser(DEFAULT_KNOWN_HOSTS),)  # HOME as it is now, not at import


@dataclass(frozen=True, slots=True)
class SshDestination:
    #: the host as the target names it (perhaps a `Host` alias of ~/.ssh/config)
    host: str
    #: the address connected to: `HostName` from ~/.ssh/config, else `host`
    hostname: str
    port: int
    #: None: the local user (neither the target nor the configuration names one)
    user: str | None
    #: whether ~/.ssh/config supplied the host name, port or user
    configured: bool = False
    #: the files host keys are checked against when the target names none (the configuration's
    #: UserKnownHostsFile and GlobalKnownHostsFile, else ~/.ssh/known_hosts); None: `UserKnownHostsFile none`
    known_hosts: tuple[str, ...] | None = field(default_factory=_default_known_hosts)
    #: the name host keys are recorded under instead of the host name (HostKeyAlias)
    host_key_alias: str | None = None
    #: seconds, from ConnectTimeout
    connect_timeout: float | None = None
    #: whether the configuration sets ServerAliveInterval
    keepalive_configured: bool = False

    @property
    def where(self) -> str:
        """`user@host:port` as connected to, and whether ~/.ssh/config said so, for messages."""
        user = f"{self.user}@" if self.user else ""
        where = f"{user}{self.hostname}:{self.port}"
        if self.hostname != self.host:
            return f"{where} ({self.host} in {SSH_CONFIG})"
        if self.configured:
            return f"{where} (from {SSH_CONFIG})"
        return where

    @property
    def key_name(self) -> str:
        """The host as known_hosts names it: `host`, or `[host]:port` off port 22."""
        name = self.host_key_alias or self.hostname
        return name if self.port == DEFAULT_PORT else f"[{name}]:{self.port}"


def given_destination(host: str, port: int | None, user: str | None) -> SshDestination:
    """The destination from the target's own values only (before ~/.ssh/config is read)."""
    return SshDestination(host, host, port or DEFAULT_PORT, user)


def resolve_destination(host: str, port: int | None, user: str | None) -> SshDestination:
    """The destination as asyncssh will connect to it: the target's values, then ~/.ssh/config's.

    Blocking (reads files): call it in a thread from the event loop. A configuration asyncssh cannot
    read gives the target's values; the connection then reports the mistake.
    """
    path = Path(SSH_CONFIG).expanduser()
    if not os.access(path, os.R_OK):
        return given_destination(host, port, user)
    try:
        local_user = getpass.getuser()
    except (KeyError, OSError):
        local_user = ""
    try:
        config = SSHClientConfig.load(
            None, [path], False, False, False, local_user, user or (), host, port or ()
        )
    except (OSError, asyncssh.Error, ValueError):
        return given_destination(host, port, user)
    hostname = str(config.get("Hostname", host))
    config_port = config.get("Port")
    config_user = config.get("User")
    resolved_port = port or (config_port if isinstance(config_port, int) else DEFAULT_PORT)
    resolved_user = user or (str(config_user) if config_user else None)
    configured = hostname != host or resolved_port != (port or DEFAULT_PORT) or resolved_user != user
    user_files = config.get("UserKnownHostsFile", ())
    known_hosts: tuple[str, ...] | None
    if user_files == []:
        known_hosts = None  # `UserKnownHostsFile none`: asyncssh checks no host key
    elif user_files:
        assert isinstance(user_files, list)
        global_files = config.get("GlobalKnownHostsFile", [])
        assert isinstance(global_files, list)
        known_hosts = tuple(os.path.expanduser(str(f)) for f in [*user_files, *global_files])
    else:
        known_hosts = _default_known_hosts()
    alias = config.get("HostKeyAlias")
    timeout = config.get("ConnectTimeout")
    return SshDestination(
        host,
        hostname,
        resolved_port,
        resolved_user,
        configured=configured,
        known_hosts=known_hosts,
        host_key_alias=str(alias) if alias else None,
        connect_timeout=float(timeout) if isinstance(timeout, int) and timeout > 0 else None,
        keepalive_configured=config.get("ServerAliveInterval") is not None,
    )

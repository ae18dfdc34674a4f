"""The listener's configuration: defaults, environment variables, and the checks made before binding."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_WS_PORT = 8765
DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: the StepFlow Monitor answers: "documented" (the API document's envelope) or "reference" (the older
#: shape the reference implementation's web UI reads; api_compat/monitor/reference_shape.py)
MONITOR_SHAPES = ("documented", "reference")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """The configuration cannot work; the message says why and what to change."""


@dataclass(slots=True, frozen=True)
class ApiConfig:
    #: address and port of the main listener (every API, and the WebSocket at /ws)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: the StepFlow Monitor WebSocket on its own port, as documented; None disables that socket
    ws_host: str = DEFAULT_HOST
    ws_port: int | None = DEFAULT_WS_PORT
    #: every route and socket needs `Authorization: Bearer <token>`
    auth_enabled: bool = False
    #: where the token secret lives (None: the engine's data directory)
    data_dir: Path | None = None
    #: origins allowed by CORS; empty: no CORS headers at all. "*" allows any origin.
    cors_origins: tuple[str, ...] = ()
    #: largest accepted artifact upload, in bytes (413 beyond)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    #: largest accepted JSON body, in bytes
    max_json_bytes: int = 1024 * 1024
    #: log entries a WebSocket client may have queued before newer ones are dropped for it
    ws_client_queue: int = 2_000
    #: log entries per second the WebSocket streams for one execution, summed over its subscribers
    #: (1,000 subscribers: 50 each per second; one: all of them); 0 for no budget
    ws_log_budget: int = 20_000
    #: write one access-log line per request (slow; for debugging)
    access_log: bool = False
    #: seconds in-flight requests get when the listener stops
    shutdown_timeout: float = 5.0
    #: Host names the listener answers to besides its bound address, localhost and loopback
    #: addresses (a request for any other name is refused: DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()
    #: failed authentications one client address may make in a moving window before it is
    #: answered 429 (the `limits` library's notation)
    auth_failure_limit: str = "10/minute"
    #: the folders whose files `POST /api/workflows {"path": ...}` may run; none: no path is read
    workflow_dirs: tuple[Path, ...] = ()
    #: one of MONITOR_SHAPES (`--monitor-shape`, STEPFLOW_MONITOR_SHAPE)
    monitor_shape: str = "documented"
    #: seconds without a heartbeat after which a running executr job goes back to the queue
    #: (`--executr-heartbeat-timeout`, STEPFLOW_EXECUTR_HEARTBEAT_TIMEOUT)
    executr_heartbeat_timeout: float = 15.0
    #: the longest an executr claim is held open (its `?wait=` may ask for up to 25 s; a longer one is
    #: cut to this, answering 204 sooner): for a proxy with a shorter idle timeout, and for the tests
    executr_longest_claim_wait: float = 25.0
    #: request limits overriding a surface's documented ones: ("SURFACE.CATEGORY[.ROLE]", "100/minute"
    #: or "off"), e.g. ("opsconductor.requests.standard", "200/minute") (`--rate-limit`, STEPFLOW_RATE_LIMITS)
    rate_limits: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ApiConfig:
        """Read the documented variables (`STEPFLOW_WEBSOCKET_HOST`, `STEPFLOW_WEBSOCKET_PORT`,
        `STEPFLOW_AUTH_ENABLED`, `STEPFLOW_STORAGE_PATH`, `STEPFLOW_LOG_LEVEL`) and ours
        (`STEPFLOW_API_HOST`, `STEPFLOW_API_PORT`, `STEPFLOW_CORS_ORIGINS`,
        `STEPFLOW_MAX_UPLOAD_MB`, `STEPFLOW_WS_LOG_BUDGET`, `STEPFLOW_ALLOWED_HOSTS`,
        `STEPFLOW_AUTH_FAILURE_LIMIT`, `STEPFLOW_MONITOR_SHAPE`, `STEPFLOW_EXECUTR_HEARTBEAT_TIMEOUT`,
        `STEPFLOW_RATE_LIMITS`). Keyword overrides (command-line options) win when not None."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if v := env.get("STEPFLOW_API_HOST"):
            values["host"] = v
        if v := env.get("STEPFLOW_API_PORT"):
            values["port"] = _port("STEPFLOW_API_PORT", v)
        if v := env.get("STEPFLOW_WEBSOCKET_HOST"):
            values["ws_host"] = v
        if (v := env.get("STEPFLOW_WEBSOCKET_PORT")) is not None and v.strip() != "":
            values["ws_port"] = None if v.strip().lower() in ("off", "none", "disabled") else _port(
                "STEPFLOW_WEBSOCKET_PORT", v
            )
        if (v := env.get("STEPFLOW_AUTH_ENABLED")) is not None:
            values["auth_enabled"] = _bool("STEPFLOW_AUTH_ENABLED", v)
        if v := env.get("STEPFLOW_STORAGE_PATH"):
            values["data_dir"] = Path(v).expanduser()
        if v := env.get("STEPFLOW_CORS_ORIGINS"):
            values["cors_origins"] = tuple(o.strip().rstrip("/") for o in v.split(",") if o.strip())
        if v := env.get("STEPFLOW_MAX_UPLOAD_MB"):
            try:
                values["max_upload_bytes"] = int(float(v) * 1024 * 1024)
            except ValueError:
                raise ConfigError(f"STEPFLOW_MAX_UPLOAD_MB={v!r} is not a number of megabytes") from None
        if v := env.get("STEPFLOW_WS_LOG_BUDGET"):
            try:
                values["ws_log_budget"] = max(int(v), 0)
            except ValueError:
                raise ConfigError(f"STEPFLOW_WS_LOG_BUDGET={v!r} is not a number of log entries per second") from None
        if env.get("STEPFLOW_LOG_LEVEL", "").upper() == "DEBUG":
            values["access_log"] = True
        if v := env.get("STEPFLOW_ALLOWED_HOSTS"):
            values["allowed_hosts"] = tuple(h.strip() for h in v.split(",") if h.strip())
        if v := env.get("STEPFLOW_AUTH_FAILURE_LIMIT"):
            values["auth_failure_limit"] = v.strip()
        if v := env.get("STEPFLOW_WORKFLOW_DIRS"):  # folders, separated by os.pathsep
            values["workflow_dirs"] = tuple(Path(d).expanduser() for d in v.split(os.pathsep) if d.strip())
        if v := env.get("STEPFLOW_MONITOR_SHAPE"):
            values["monitor_shape"] = v.strip().lower()
        if v := env.get("STEPFLOW_EXECUTR_HEARTBEAT_TIMEOUT"):
            try:
                values["executr_heartbeat_timeout"] = float(v)
            except ValueError:
                raise ConfigError(f"STEPFLOW_EXECUTR_HEARTBEAT_TIMEOUT={v!r} is not a number of seconds") from None
        if v := env.get("STEPFLOW_RATE_LIMITS"):
            from api_compat.rate_limits import parse_overrides

            values["rate_limits"] = parse_overrides(v)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("data_dir"), str):
            values["data_dir"] = Path(str(values["data_dir"])).expanduser()
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_command_line(cls, *, allowed_hosts: Sequence[str] = (), rate_limits: Sequence[str] = (),
                          **options: object) -> ApiConfig:
        """`from_env` with a command's options, checked: `allowed_hosts` are added to
        STEPFLOW_ALLOWED_HOSTS, `rate_limits` (each `--rate-limit` text) come after
        STEPFLOW_RATE_LIMITS, so that the later one wins. ConfigError says what is wrong."""
        config = cls.from_env(None, **options)
        if allowed_hosts:
            config = config.replace(allowed_hosts=(*config.allowed_hosts, *allowed_hosts))
        if rate_limits:
            from api_compat.rate_limits import parse_overrides

            given = tuple(pair for text in rate_limits for pair in parse_overrides(text, "--rate-limit"))
            config = config.replace(rate_limits=(*config.rate_limits, *given))
        config.check()
        return config

    def replace(self, **changes: object) -> ApiConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def check(self) -> None:
        """Refuse what must not run: a port that is no port, an address other than loopback
        without authentication."""
        for what, option, port in (("the API", "--port", self.port), ("the WebSocket", "--ws-port", self.ws_port)):
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{port} is not a port number for {what} (0-65535; {option})")
        for what, host in (("the API", self.host), ("the WebSocket", self.ws_host if self.ws_port is not None else None)):
            if host is None or is_loopback(host) or self.auth_enabled:
                continue
            raise ConfigError(
                f"refusing to serve {what} on {host!r} without authentication: anyone who can reach "
                f"that address could run commands on this machine. Set STEPFLOW_AUTH_ENABLED=true "
                f"(and give clients a token from `stepflow token create`), or bind to 127.0.0.1."
            )
        if self.monitor_shape not in MONITOR_SHAPES:
            raise ConfigError(f"monitor shape {self.monitor_shape!r} is not one of {', '.join(MONITOR_SHAPES)} "
                              f"(--monitor-shape, STEPFLOW_MONITOR_SHAPE)")
        if not 0 < self.executr_heartbeat_timeout < 1e9:
            raise ConfigError("the executr heartbeat timeout must be a positive number of seconds "
                              "(--executr-heartbeat-timeout, STEPFLOW_EXECUTR_HEARTBEAT_TIMEOUT)")
        if not 0 <= self.executr_longest_claim_wait < 1e9:
            raise ConfigError("the longest executr claim wait must be a number of seconds from 0")
        if self.max_upload_bytes <= 0:
            raise ConfigError("the upload cap must be a positive number of bytes")
        from api_compat.rate_limits import check_overrides, parse_limit

        parse_limit(self.auth_failure_limit, "STEPFLOW_AUTH_FAILURE_LIMIT")
        check_overrides(self.rate_limits, "the rate limits (--rate-limit, STEPFLOW_RATE_LIMITS)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}={value!r} is not a port number (0-65535)")
    return port


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r}: use true or false")

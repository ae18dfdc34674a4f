"""The embedded listener: AppRunner + TCPSite for the main port and the WebSocket port."""

from __future__ import annotations

import errno
import logging

from aiohttp import web

from api_compat.app import create_app, create_ws_app
from api_compat.config import ApiConfig
from api_compat.state import CLOSE_STREAMS, ServedEngine

log = logging.getLogger(__name__)


class ListenerError(OSError):
    """The listener could not bind; `str()` is a sentence the CLI or the TUI can show as is."""

    def __str__(self) -> str:
        # OSError's own str() starts with "[Errno 98] ": not for a person's eyes
        return self.strerror or super().__str__()


def _bind_error(exc: OSError, what: str, host: str, port: int, option: str) -> ListenerError:
    if exc.errno == errno.EADDRINUSE:
        text = (f"cannot serve {what} on {host}:{port}: the port is already in use "
                f"(another stepflow?). Choose another with {option}.")
    elif exc.errno in (errno.EACCES, errno.EPERM):
        text = f"cannot serve {what} on {host}:{port}: permission denied (ports below 1024 need privileges)."
    elif exc.errno == errno.EADDRNOTAVAIL:
        text = f"cannot serve {what} on {host}:{port}: this machine has no such address."
    else:
        text = f"cannot serve {what} on {host}:{port}: {exc.strerror or exc}"
    return ListenerError(exc.errno or 0, text)


class ApiListener:
    """Start with `await listener.start()` (raises `ListenerError` when a port is busy, and
    `ConfigError` when the configuration is refused), stop with `await listener.stop()`; or use it
    as an async context manager. `port` and `ws_port` give the bound ports (useful with port 0)."""

    def __init__(self, engine: ServedEngine, config: ApiConfig, *, port_option: str = "--port",
                 ws_port_option: str = "--ws-port (or STEPFLOW_WEBSOCKET_PORT)") -> None:
        """`port_option`, `ws_port_option`: what a busy port's error tells the user to change (the
        options of the command that starts the listener)."""
        self.engine = engine
        self.config = config
        self.port_option = port_option
        self.ws_port_option = ws_port_option
        self.app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._ws_runner: web.AppRunner | None = None
        self.port: int | None = None
        self.ws_port: int | None = None

    @property
    def url(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"http://{host}:{self.port}"

    @property
    def ws_url(self) -> str | None:
        if self.ws_port is None:
            return None
        host = self.config.ws_host if ":" not in self.config.ws_host else f"[{self.config.ws_host}]"
        return f"ws://{host}:{self.ws_port}"

    async def start(self) -> None:
        config = self.config
        config.check()
        app = create_app(self.engine, config=config)
        runner_kwargs = {
            "shutdown_timeout": config.shutdown_timeout,
            "handle_signals": False,
            "access_log": logging.getLogger("stepflow.api.access") if config.access_log else None,
        }
        runner = web.AppRunner(app, **runner_kwargs)  # type: ignore[arg-type]
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.host, config.port)
            try:
                await site.start()
            except OSError as exc:
                raise _bind_error(exc, "the API", config.host, config.port, self.port_option) from exc
            self.port = runner.addresses[0][1]
            if config.ws_port is not None:
                ws_runner = web.AppRunner(create_ws_app(app), **runner_kwargs)  # type: ignore[arg-type]
                await ws_runner.setup()
                try:
                    ws_site = web.TCPSite(ws_runner, config.ws_host, config.ws_port)
                    try:
                        await ws_site.start()
                    except OSError as exc:
                        raise _bind_error(exc, "the WebSocket", config.ws_host, config.ws_port,
                                          self.ws_port_option) from exc
                except BaseException:
                    await ws_runner.cleanup()
                    raise
                self._ws_runner = ws_runner
                self.ws_port = ws_runner.addresses[0][1]
        except BaseException:
            await runner.cleanup()
            raise
        self.app = app
        self._runner = runner
        log.info("API listening on %s (WebSocket %s)", self.url, self.ws_url or "at /ws only")

    async def stop(self) -> None:
        """Close the WebSockets with 1001 "going away" (after sending what they have queued), let
        in-flight requests finish (up to `shutdown_timeout`), release the ports."""
        if self.app is not None:
            for close_streams in self.app[CLOSE_STREAMS]:
                await close_streams()
        if self._ws_runner is not None:
            await self._ws_runner.cleanup()
            self._ws_runner = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.app = None

    async def __aenter__(self) -> ApiListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

"""`stepflow serve`: the listener over an engine, until SIGTERM or Ctrl-C, then a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

from api_compat.config import ApiConfig
from api_compat.listener import ApiListener
from api_compat.state import ServedEngine


async def serve(
    engine: ServedEngine,
    config: ApiConfig,
    *,
    shutdown_engine: Callable[[], Awaitable[None]],
    stop: asyncio.Event | None = None,
    on_ready: Callable[[ApiListener], None] | None = None,
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT arrives), then:
    1. `shutdown_engine()`: running executions are cancelled (reason "shutdown") and recorded,
       the store is flushed; WebSocket clients receive their `execution_completed` messages;
    2. the listener stops: sockets get what is queued, then close with 1001 "going away".
    Raises `ListenerError` (an OSError) when a port is busy, `ConfigError` when refused."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    listener = ApiListener(engine, config)
    try:
        await listener.start()
        if on_ready is not None:
            on_ready(listener)
        await stop.wait()
        await shutdown_engine()
    finally:
        await listener.stop()
        for sig in installed:
            loop.remove_signal_handler(sig)

"""Threads of the Docker runner and their way back to the event loop.

The SDK blocks. The calls that block for as long as a command runs (following its logs, reading its
exec stream, waiting for its exit) each run in a daemon thread of their own (`in_thread`,
`docker_logs.LogReader`, `docker_exec.DockerExec`), so that many running commands never starve the
loop's default executor, never wait for a free worker, and a stream the daemon never ends cannot hold
up the interpreter's exit. What they read comes to the loop through a `Handoff`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from engine.model import Stream

T = TypeVar("T")

#: chunks of output read ahead of the consumer, per command; then reading waits
BUFFER_CHUNKS = 256


class Handoff:
    """Items put by threads, got by the event loop; at most BUFFER_CHUNKS ahead of the reader.

    Once stopped, `put` drops what it is given (and never waits), so a thread can run to its end."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[Stream, bytes | None]] = asyncio.Queue()
        self._room = threading.Semaphore(BUFFER_CHUNKS)
        self.stopped = threading.Event()

    def put(self, item: tuple[Stream, bytes | None]) -> bool:
        """From a thread: hand `item` over, waiting for room; False when stopped."""
        while not self._room.acquire(timeout=0.25):
            if self.stopped.is_set():
                return False
        if self.stopped.is_set():
            return False
        return call_soon(self._loop, self._queue.put_nowait, item)

    async def get(self) -> tuple[Stream, bytes | None]:
        item = await self._queue.get()
        self._room.release()
        return item

    def drain(self) -> list[tuple[Stream, bytes | None]]:
        """What was handed over and not got yet."""
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
            self._room.release()
        return items

    def stop(self) -> None:
        self.stopped.set()


def call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> bool:
    """From a thread: run `callback` in the loop; False when the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def in_thread(call: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run a call that blocks as long as a command runs, in a daemon thread of its own."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop
            call_soon(loop, _fail, future, exc)
        else:
            call_soon(loop, resolve, future, result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future

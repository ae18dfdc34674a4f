"""One command in a container of its own (the Docker runner's default mode).

Its stdout and stderr come from two log streams followed apart, live (`docker_logs.LogReader`).
Stopping it is `docker stop` (SIGTERM to the container's PID 1, SIGKILL after the grace period),
which ends the whole container.

Following logs is not enough to know when the output ends: podman's follow sometimes never ends
(it misses the container's `died` event when the container exits between its state check and its
subscription to events) and sometimes ends early, without the last lines. The container's exit
(`wait`) is what ends the output: once it exited, the daemon has the whole log, so the follows are
stopped and the log is read once more without following, from where the follows had got to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
from docker.models.containers import Container

from engine.model import Stream
from engine.runners.base import ResourceSample, ResourceUsage
from engine.runners.docker_logs import LogReader
from engine.runners.docker_threads import Handoff, in_thread

if TYPE_CHECKING:
    from engine.runners.docker import DockerRunner

log = logging.getLogger(__name__)


class ContainerProcess:
    """What a command in a container (its own, or an exec in a shared one) has in common: no local
    pid to sample, and the runner is told once both its exit and the end of its output are known."""

    _runner: DockerRunner
    container: Container

    def _watch_end(self) -> None:
        """Start waiting for the exit (`_wait`); `output()` sets `_output_done` when it ends."""
        self._exited: asyncio.Future[int] = asyncio.ensure_future(self._wait())
        self._output_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finished = False
        self._exited.add_done_callback(lambda _: self._maybe_finished())
        self._output_done.add_done_callback(lambda _: self._maybe_finished())

    async def _wait(self) -> int:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return None

    @property
    def container_id(self) -> str:
        return self.container.id or ""

    def _maybe_finished(self) -> None:
        if self._exited.done() and self._output_done.done() and not self._finished:
            self._finished = True
            self._runner._finish(self)  # type: ignore[arg-type]

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def sample(self) -> ResourceSample | None:
        return None

    def final_usage(self) -> ResourceUsage | None:
        return None


class DockerCommand(ContainerProcess):
    """One command running in its own container."""

    def __init__(self, runner: DockerRunner, container: Container) -> None:
        self._runner = runner
        self.container = container
        self._watch_end()

    async def _wait(self) -> int:
        try:
            result = await in_thread(self.container.wait, f"docker-wait-{self.container.short_id}")
        except docker.errors.NotFound:
            return 137  # removed under us (docker rm -f): killed
        except (docker.errors.DockerException, OSError) as exc:
            log.warning("container %s: cannot wait for its exit: %s", self.container.short_id, exc)
            return 255
        code = int(result.get("StatusCode", 255))
        return 255 if code < 0 else code

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        """The two log streams followed live until the container exits, then the rest of its log."""
        given = {Stream.STDOUT: 0, Stream.STDERR: 0}
        follows = Handoff()
        rest = Handoff()
        readers = [LogReader(self.container, stream, follows, follow=True) for stream in given]
        try:
            for reader in readers:
                reader.start()
            ended: set[Stream] = set()
            while len(ended) < len(given):
                getter = asyncio.ensure_future(follows.get())
                waiting: set[asyncio.Future[Any]] = {getter, self._exited}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                stream, data = getter.result()
                if data is None:
                    ended.add(stream)
                elif data:
                    given[stream] += len(data)
                    yield stream, data
            for reader in readers:
                reader.stop()
            for stream, data in follows.drain():
                if data:
                    given[stream] += len(data)
                    yield stream, data
            # The follows may have ended early (podman's sometimes do, short of the last lines) or
            # not at all: the log read once the container exited is the whole of it.
            await asyncio.shield(self._exited)
            readers = [
                LogReader(self.container, stream, rest, follow=False, skip=given[stream]) for stream in given
            ]
            for reader in readers:
                reader.start()
            ended = set()
            while len(ended) < len(given):
                stream, data = await rest.get()
                if data is None:
                    ended.add(stream)
                elif data:
                    yield stream, data
        finally:
            for reader in readers:
                reader.stop()
            follows.stop()
            rest.stop()
            if not self._output_done.done():
                self._output_done.set_result(None)

    async def terminate(self, grace: float) -> None:
        if self._exited.done():
            return
        try:
            # The API counts whole seconds.
            await asyncio.to_thread(self.container.stop, timeout=max(0, math.ceil(grace)))
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            log.warning("container %s: cannot stop it: %s", self.container.short_id, exc)
            with contextlib.suppress(docker.errors.DockerException):
                await asyncio.to_thread(self.container.kill)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._runner.api_timeout):
                await asyncio.shield(self._exited)


"""Run commands in Docker containers, with the `docker` SDK (any Docker Engine API: dockerd, podman).

By default each command gets a container of its own, created from the runner's image with the
command, its environment, working directory, volumes and limits, then started. Its stdout and stderr
come from two log streams followed apart, live. Stopping it is `docker stop` (SIGTERM to the
container's PID 1, SIGKILL after the grace period), which ends the whole container.

Following logs is not enough to know when the output ends: podman's follow sometimes never ends
(it misses the container's `died` event when the container exits between its state check and its
subscription to events) and sometimes ends early, without the last lines. The container's exit
(`wait`) is what ends the output: once it exited, the daemon has the whole log, so the follows are
stopped and the log is read once more without following, from where the follows had got to.

Artifacts are read with the archive API, which works on stopped containers: a finished container is
therefore kept (stopped) until the runner is closed, or until `KEEP_FINISHED` newer ones finished,
then removed, unless `keep`.

With `reuse`, one container runs for the whole runner (a branch): started once from the image with
an idle command, each command is run in it with `exec`, its stdout and stderr apart on the exec's
stream, its exit code from `exec_inspect`. The command is wrapped so that it reports its process
group first (on stderr, taken out of the output); stopping it signals that group inside the
container, through another exec. Artifacts come from the live container; it is removed when the
runner is closed, unless `keep` (then it is stopped).

The SDK blocks. Short calls run in `asyncio.to_thread`; the calls that block for as long as a command
runs (following its logs or its exec stream, waiting for its exit) each run in a daemon thread of
their own, so that many running commands never starve the loop's default executor, never wait for
a free worker, and a stream the daemon never ends cannot hold up the interpreter's exit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container
from docker.utils.socket import demux_adaptor, frames_iter

from engine.model import Stream
from engine.runners.base import CommandSpec, FetchError, ResourceSample, SpawnError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: finished containers kept for artifact fetches, newest first; older ones are removed
KEEP_FINISHED = 16
#: grace given to commands still running when the runner is closed
CLOSE_GRACE = 1.0
#: label put on every container this runner creates
LABEL = "io.stepflow.runner"
#: how many symlinks a fetched path may go through
MAX_LINKS = 16
#: chunks of output read ahead of the consumer, per command; then reading waits
BUFFER_CHUNKS = 256
#: seconds before a log follow that ended (or timed out) while the container runs is opened again
REFOLLOW_DELAY = 0.2
#: what a container kept for `reuse` runs: nothing, until it is stopped (busybox sh, dash, bash)
IDLE_COMMAND = ["sh", "-c", 'trap "exit 0" TERM; while :; do sleep 3600 & wait; done']
#: the first line an exec'd command writes on stderr: what to signal to stop it
KILL_TARGET_PREFIX = b"\x1e@stepflow-kill-target "
#: runs an exec'd command: waits for a line on stdin (sent once the exec's stream is attached:
#: podman drops what an exec writes before; without it, runs nothing), reports `-PGID` when the command leads its own
#: process group (runc and crun start exec'd processes in a new session), else its PID, then
#: becomes the command, its stdin /dev/null
EXEC_WRAPPER = (
    "read -r _ || exit 125; "
    "g=$$; if [ -r /proc/$$/stat ]; then read -r _ _ _ _ g _ </proc/$$/stat; fi; "
    'if [ "$g" = "$$" ]; then t="-$$"; else t="$$"; fi; '
    "printf '\\036@stepflow-kill-target %s\\n' \"$t\" >&2; "
    'exec "$@" </dev/null'
)
#: stops what `$1` names inside a reused container: SIGTERM, then SIGKILL after `$2` tenths of a
#: second, and returns once nothing of it is left (or 10 s after SIGKILL)
EXEC_REAPER = (
    't=$1; n=$2; i=0; kill -TERM "$t" 2>/dev/null || exit 0; '
    'while kill -0 "$t" 2>/dev/null; do '
    'if [ "$i" -ge "$n" ]; then kill -KILL "$t" 2>/dev/null; fi; '
    'if [ "$i" -ge $((n + 100)) ]; then exit 1; fi; '
    "sleep 0.1; i=$((i + 1)); done"
)


class DockerRunner:
    """Runs each command in a fresh container of `image` (or all in one, with `reuse`).

    `docker_host` is a Docker API URL (`unix:///path`, `tcp://host:2375`, `ssh://user@host`);
    without it DOCKER_HOST and the other DOCKER_* variables are honoured. `volumes` are
    `host:container[:mode]` strings; `cpus` a fraction of CPUs; `memory` bytes or a string such as
    "512m". A missing image is an error; `pull` pulls the image (once, even when present) before
    the first command.
    """

    def __init__(
        self,
        image: str,
        docker_host: str | None = None,
        volumes: tuple[str, ...] | list[str] = (),
        cpus: float | None = None,
        memory: int | str | None = None,
        workdir: str | None = None,
        reuse: bool = False,
        keep: bool = False,
        pull: bool = False,
        connect_timeout: float = 10,
        api_timeout: float = 120,
    ) -> None:
        self.image = image
        #: one long-lived container for every command, each run in it with `exec`
        self.reuse = reuse
        self.docker_host = docker_host
        self.volumes = list(volumes)
        self.cpus = cpus
        self.memory = memory
        self.workdir = workdir
        self.keep = keep
        self.pull = pull
        self.connect_timeout = connect_timeout
        self.api_timeout = api_timeout
        self._client: docker.DockerClient | None = None
        self._client_lock = asyncio.Lock()
        self._pulled = False
        self._running: set[DockerCommand | DockerExec] = set()
        #: containers of finished commands, newest first, kept for `fetch` and `glob`
        self._finished: collections.deque[Container] = collections.deque()
        #: with `reuse`: the container every command runs in, once started
        self._shared: Container | None = None
        self._shared_lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return self.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    @property
    def image_name(self) -> str:
        """The image with its tag, as people read it (`busybox` is `busybox:latest`)."""
        last = self.image.rsplit("/", 1)[-1]
        return self.image if ":" in last or "@" in last else f"{self.image}:latest"

    # -- the daemon -------------------------------------------------------------------------
    async def _docker(self) -> docker.DockerClient:
        async with self._client_lock:
            if self._client is None:
                self._client = await asyncio.to_thread(self._connect)
            return self._client

    def _connect(self) -> docker.DockerClient:
        try:
            # The short timeout bounds the version negotiation, the first request.
            if self.docker_host is not None:
                client = docker.DockerClient(base_url=self.docker_host, timeout=self.connect_timeout)
            else:
                client = docker.from_env(timeout=self.connect_timeout)
        except docker.errors.DockerException as exc:
            raise SpawnError(
                f"cannot reach the Docker daemon at {self.where}: {_daemon_reason(exc, self)}"
            ) from None
        client.api.timeout = self.api_timeout
        return client

    async def _ensure_image(self, client: docker.DockerClient) -> None:
        """With `pull`, pull the image once (even when present), before the first command."""
        if not self.pull or self._pulled:
            return
        async with self._client_lock:
            if self._pulled:
                return
            log.info("pulling %s from %s", self.image_name, self.where)
            try:
                await asyncio.to_thread(client.images.pull, self.image_name)
            except docker.errors.ImageNotFound:
                raise SpawnError(f"image {self.image_name!r} not found (pull failed)") from None
            except docker.errors.APIError as exc:
                raise SpawnError(f"cannot pull image {self.image_name!r}: {_explain(exc)}") from None
            self._pulled = True

    # -- commands ---------------------------------------------------------------------------
    def _command(self, spec: CommandSpec) -> list[str]:
        if spec.argv is not None:
            if not spec.argv:
                raise SpawnError("cannot start an empty command")
            return list(spec.argv)
        if spec.script is None:
            raise SpawnError("cannot start a command without argv or script")
        if spec.shell == "bash":
            # Small images have no bash: sh then.
            chooser = 'if command -v bash >/dev/null 2>&1; then exec bash -c "$1"; fi; exec sh -c "$1"'
            return ["sh", "-c", chooser, "sh", spec.script]
        return [spec.shell, "-c", spec.script]

    async def start(self, spec: CommandSpec) -> DockerCommand | DockerExec:
        command = self._command(spec)
        if self.reuse:
            return await self._exec(spec, command)
        client = await self._docker()
        await self._ensure_image(client)
        container = await self._run_container(client, command, dict(spec.env), spec.cwd or self.workdir)
        running = DockerCommand(self, container)
        self._running.add(running)
        return running

    async def _run_container(
        self, client: docker.DockerClient, command: list[str], env: dict[str, str], workdir: str | None
    ) -> Container:
        """Create and start a container of the image running `command`."""
        options: dict[str, Any] = {
            "environment": env,
            "labels": {LABEL: "1"},
            "detach": True,
            "stdin_open": False,
            "tty": False,
        }
        if workdir:
            options["working_dir"] = workdir
        if self.volumes:
            options["volumes"] = self.volumes
        if self.cpus is not None:
            options["nano_cpus"] = int(self.cpus * 1e9)
        if self.memory is not None:
            options["mem_limit"] = self.memory
        try:
            container = await asyncio.to_thread(client.containers.create, self.image, command, **options)
        except docker.errors.ImageNotFound:
            raise SpawnError(f"image {self.image_name!r} not found") from None
        except docker.errors.APIError as exc:
            raise SpawnError(f"cannot create a container of {self.image_name!r}: {_explain(exc)}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise SpawnError(
                f"cannot reach the Docker daemon at {self.where}: {_daemon_reason(exc, self)}"
            ) from None
        try:
            await asyncio.to_thread(container.start)
        except BaseException as exc:
            await self._remove(container)
            if isinstance(exc, docker.errors.APIError):
                raise SpawnError(
                    f"cannot start {command[0]!r} in {self.image_name!r}: {_explain(exc)}"
                ) from None
            if isinstance(exc, (docker.errors.DockerException, OSError)):
                raise SpawnError(
                    f"cannot start a container at {self.where}: {_daemon_reason(exc, self)}"
                ) from None
            raise
        return container

    async def _shared_container(self, client: docker.DockerClient) -> Container:
        """With `reuse`: the runner's one container, started at the first command."""
        async with self._shared_lock:
            if self._shared is None:
                self._shared = await self._run_container(client, IDLE_COMMAND, {}, self.workdir)
                log.info("container %s of %s started for reuse", self._shared.short_id, self.image_name)
            return self._shared

    async def _exec(self, spec: CommandSpec, command: list[str]) -> DockerExec:
        client = await self._docker()
        await self._ensure_image(client)
        container = await self._shared_container(client)
        api = client.api
        options: dict[str, Any] = {"stdout": True, "stderr": True, "stdin": True, "tty": False}
        if spec.env:
            options["environment"] = dict(spec.env)
        if spec.cwd:
            options["workdir"] = spec.cwd
        try:
            created = await asyncio.to_thread(
                api.exec_create, container.id, ["sh", "-c", EXEC_WRAPPER, "sh", *command], **options
            )
            exec_id = created["Id"]
            sock = await asyncio.to_thread(api.exec_start, exec_id, socket=True)
            try:
                # The stream is attached: the wrapper may go on (see EXEC_WRAPPER).
                await asyncio.to_thread(getattr(sock, "_sock", sock).sendall, b"\n")
            except BaseException:
                sock.close()  # the wrapper sees its stdin end, and runs nothing
                raise
        except docker.errors.NotFound:
            raise SpawnError(
                f"the container {container.short_id} of {self.image_name!r} (reuse: true) is gone"
            ) from None
        except docker.errors.APIError as exc:
            raise SpawnError(
                f"cannot run {command[0]!r} in the container {container.short_id} of "
                f"{self.image_name!r}: {_explain(exc)}"
            ) from None
        except (docker.errors.DockerException, OSError) as exc:
            raise SpawnError(
                f"cannot reach the Docker daemon at {self.where}: {_daemon_reason(exc, self)}"
            ) from None
        frames = (demux_adaptor(*frame) for frame in frames_iter(sock, tty=False))
        running = DockerExec(self, client, container, exec_id, frames, sock)
        self._running.add(running)
        return running

    def _finish(self, command: DockerCommand | DockerExec) -> None:
        """`command` exited and its output was read: keep its container for fetches, for a while."""
        self._running.discard(command)
        if isinstance(command, DockerExec):
            return  # the shared container stays until `close`
        self._finished.appendleft(command.container)
        while len(self._finished) > KEEP_FINISHED:
            old = self._finished.pop()
            if not self.keep:
                asyncio.ensure_future(self._remove(old))

    async def _remove(self, container: Container) -> None:
        if self.keep:
            return
        try:
            await asyncio.to_thread(container.remove, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            log.warning("cannot remove container %s: %s", container.short_id, exc)

    # -- files ------------------------------------------------------------------------------
    def _containers(self) -> list[Container]:
        """Where files may be: the shared container, the newest finished containers, then running ones."""
        shared = [self._shared] if self._shared is not None else []
        running = [command.container for command in self._running if isinstance(command, DockerCommand)]
        return [*shared, *self._finished, *running]

    async def fetch(self, path: str, cwd: str | None, dest: Path) -> str:
        containers = self._containers()
        if not containers:
            raise FetchError(f"artifact {path!r} not found: no container of {self.image_name!r} ran here")
        for container in containers:
            base = posixpath.normpath(cwd or self.workdir or _container_workdir(container))
            joined = posixpath.normpath(posixpath.join(base, path))
            if not _inside(joined, base):
                raise FetchError(f"artifact path {path!r} escapes the working directory")
            try:
                return await asyncio.to_thread(_fetch, container, joined, base, path, dest)
            except _Missing:
                continue
        raise FetchError(f"artifact {path!r} not found in {cwd or 'the working directory'!r}")

    async def glob(self, pattern: str, cwd: str | None) -> list[str]:
        containers = self._containers()
        if not pattern or not containers:
            return []
        container = containers[0]
        base = posixpath.normpath(cwd or self.workdir or _container_workdir(container))
        if posixpath.isabs(pattern):
            normal = posixpath.normpath(pattern)
            if not _inside(normal, base) or normal == base:
                return []
            pattern = posixpath.relpath(normal, base)
        return await asyncio.to_thread(_glob, container, pattern, base)

    async def close(self) -> None:
        """Stop the commands still running, remove the containers (unless `keep`)."""
        running = list(self._running)
        if running:
            await asyncio.gather(
                *(command.terminate(CLOSE_GRACE) for command in running), return_exceptions=True
            )
        for command in running:
            if isinstance(command, DockerExec):
                command.discard_output()  # nobody may be reading it: its thread must not wait
        containers = [
            *self._finished,
            *(command.container for command in running if isinstance(command, DockerCommand)),
        ]
        shared, self._shared = self._shared, None
        self._finished.clear()
        self._running.clear()
        if shared is not None:
            if self.keep:
                # Kept for people to look into, but not left idling.
                with contextlib.suppress(docker.errors.DockerException):
                    await asyncio.to_thread(shared.stop, timeout=max(0, math.ceil(CLOSE_GRACE)))
            else:
                containers.append(shared)
        await asyncio.gather(*(self._remove(container) for container in containers))
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None


class DockerCommand:
    """One command running in its own container."""

    def __init__(self, runner: DockerRunner, container: Container) -> None:
        self._runner = runner
        self.container = container
        self._exited: asyncio.Future[int] = asyncio.ensure_future(self._wait())
        self._output_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finished = False
        self._exited.add_done_callback(lambda _: self._maybe_finished())
        self._output_done.add_done_callback(lambda _: self._maybe_finished())

    @property
    def pid(self) -> int | None:
        return None

    @property
    def container_id(self) -> str:
        return self.container.id or ""

    def _maybe_finished(self) -> None:
        if self._exited.done() and self._output_done.done() and not self._finished:
            self._finished = True
            self._runner._finish(self)

    async def _wait(self) -> int:
        try:
            result = await _in_thread(self.container.wait, f"docker-wait-{self.container.short_id}")
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
        follows = _Handoff()
        rest = _Handoff()
        readers = [_LogReader(self.container, stream, follows, follow=True) for stream in given]
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
                _LogReader(self.container, stream, rest, follow=False, skip=given[stream]) for stream in given
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

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

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

    def sample(self) -> ResourceSample | None:
        return None


class DockerExec:
    """One command run with `exec` in the runner's shared container (`reuse`)."""

    def __init__(
        self,
        runner: DockerRunner,
        client: docker.DockerClient,
        container: Container,
        exec_id: str,
        frames: Iterable[tuple[bytes | None, bytes | None]],
        sock: Any,
    ) -> None:
        self._runner = runner
        self._api = client.api
        self.container = container
        self.exec_id = exec_id
        loop = asyncio.get_running_loop()
        self._output = _Handoff()
        #: what to signal to stop the command (`-PGID` or `PID`); None when it never said
        self._target: asyncio.Future[str | None] = loop.create_future()
        self._stream_closed: asyncio.Future[None] = loop.create_future()
        self._frames = frames
        self._sock = sock
        threading.Thread(
            target=self._read, args=(loop,), name=f"docker-exec-{exec_id[:12]}", daemon=True
        ).start()
        self._exited: asyncio.Future[int] = asyncio.ensure_future(self._wait())
        self._output_done: asyncio.Future[None] = loop.create_future()
        self._finished = False
        self._exited.add_done_callback(lambda _: self._maybe_finished())
        self._output_done.add_done_callback(lambda _: self._maybe_finished())

    @property
    def pid(self) -> int | None:
        return None

    @property
    def container_id(self) -> str:
        return self.container.id or ""

    def _maybe_finished(self) -> None:
        if self._exited.done() and self._output_done.done() and not self._finished:
            self._finished = True
            self._runner._finish(self)

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        """In its own thread: the exec's stream, stdout and stderr apart, into the handoff."""
        header: bytes | None = b""  # the wrapper's first stderr line, until it is complete
        try:
            for out, err in self._frames:
                if out:
                    self._output.put((Stream.STDOUT, out))
                if err and header is not None:
                    header += err
                    err = b""
                    if b"\n" in header or not KILL_TARGET_PREFIX.startswith(
                        header[: len(KILL_TARGET_PREFIX)]
                    ):
                        line, newline, err = header.partition(b"\n")
                        if line.startswith(KILL_TARGET_PREFIX) and newline:
                            target = line[len(KILL_TARGET_PREFIX) :].decode("ascii", "replace").strip()
                            _call_soon(loop, _resolve, self._target, target or None)
                        else:
                            err = header  # not the wrapper's: output as it came
                        header = None
                if err:
                    self._output.put((Stream.STDERR, err))
        except Exception as exc:  # noqa: BLE001 - a broken stream ends the output, said in the log
            log.warning("exec %s: output stream broke: %s", self.exec_id[:12], exc)
        finally:
            with contextlib.suppress(Exception):
                self._sock.close()
            if header:
                self._output.put((Stream.STDERR, header))
            self._output.put((Stream.STDOUT, None))
            _call_soon(loop, _resolve, self._target, None)
            _call_soon(loop, _resolve, self._stream_closed, None)

    async def _wait(self) -> int:
        await self._stream_closed
        deadline = asyncio.get_running_loop().time() + self._runner.api_timeout
        delay = 0.01
        while True:
            try:
                info = await asyncio.to_thread(self._api.exec_inspect, self.exec_id)
            except docker.errors.NotFound:
                return 137  # the container was removed under us
            except (docker.errors.DockerException, OSError) as exc:
                log.warning("exec %s: cannot read its exit code: %s", self.exec_id[:12], exc)
                return 255
            code = info.get("ExitCode")
            if not info.get("Running") and code is not None:
                return 255 if int(code) < 0 else int(code)
            if asyncio.get_running_loop().time() > deadline:
                log.warning("exec %s: its stream ended but it still runs", self.exec_id[:12])
                return 255
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        try:
            while True:
                stream, data = await self._output.get()
                if data is None:
                    return
                yield stream, data
        finally:
            # Not read any more: the reading thread drops the rest, and still sees the end.
            self._output.stop()
            if not self._output_done.done():
                self._output_done.set_result(None)

    def discard_output(self) -> None:
        """Drop the output not read yet, and what comes after."""
        self._output.stop()

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    async def terminate(self, grace: float) -> None:
        """SIGTERM to the command's process group in the container, SIGKILL after `grace`."""
        target = await asyncio.shield(self._target)
        if target is not None:
            tenths = max(0, math.ceil(grace * 10))
            reaper = ["sh", "-c", EXEC_REAPER, "sh", target, str(tenths)]
            try:
                await _in_thread(
                    lambda: self.container.exec_run(reaper),
                    f"docker-exec-stop-{self.exec_id[:12]}",
                )
            except docker.errors.NotFound:
                pass  # the container is gone, and the command with it
            except (docker.errors.DockerException, OSError) as exc:
                log.warning("exec %s: cannot stop it: %s", self.exec_id[:12], exc)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._runner.api_timeout):
                await asyncio.shield(self._exited)

    def sample(self) -> ResourceSample | None:
        return None


# -- threads ----------------------------------------------------------------------------------
class _Handoff:
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
        return _call_soon(self._loop, self._queue.put_nowait, item)

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


class _LogReader:
    """One log stream of a container (stdout or stderr), read in a thread of its own into a handoff.

    Following, it opens the log again (skipping what it handed over already) when the follow ends
    or times out, until stopped: the caller stops it once the container exited. podman sends a
    follow's headers only with its first line, so a silent stream times out (`api_timeout`)."""

    def __init__(
        self, container: Container, stream: Stream, handoff: _Handoff, follow: bool, skip: int = 0
    ) -> None:
        self._container = container
        self._stream = stream
        self._handoff = handoff
        self._follow = follow
        self._skip = skip
        self._lock = threading.Lock()
        self._current: Any = None
        self._stopped = threading.Event()

    def start(self) -> None:
        name = f"docker-logs-{self._container.short_id}-{self._stream.value}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def stop(self) -> None:
        """Stop reading; a read in progress is cut short by closing its connection."""
        self._stopped.set()
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            with contextlib.suppress(Exception):
                current.close()

    def _done(self) -> bool:
        return self._stopped.is_set() or self._handoff.stopped.is_set()

    def _run(self) -> None:
        seen = self._skip  # bytes of the log already handed over (or to skip)
        stdout = self._stream is Stream.STDOUT
        try:
            while not self._done():
                try:
                    frames = self._container.logs(
                        stdout=stdout, stderr=not stdout, stream=True, follow=self._follow
                    )
                except docker.errors.NotFound:
                    return  # removed under us
                except docker.errors.APIError as exc:
                    log.warning("container %s: cannot read its log: %s", self._container.short_id, exc)
                    return
                except (docker.errors.DockerException, OSError) as exc:
                    if not self._follow:
                        log.warning("container %s: cannot read its log: %s", self._container.short_id, exc)
                        return
                    self._stopped.wait(REFOLLOW_DELAY)  # timed out before a first line: again
                    continue
                with self._lock:
                    self._current = frames
                if self._done():
                    with contextlib.suppress(Exception):
                        frames.close()
                    return
                position = 0
                for chunk in frames:  # a broken connection ends the iteration
                    start, position = position, position + len(chunk)
                    if position <= seen:
                        continue
                    new = chunk[seen - start :] if start < seen else chunk
                    if not self._handoff.put((self._stream, new)):
                        return
                    seen = position
                with self._lock:
                    self._current = None
                if not self._follow:
                    return
                self._stopped.wait(REFOLLOW_DELAY)
        except Exception as exc:  # noqa: BLE001 - a broken stream ends the output, said in the log
            log.warning("container %s: log stream broke: %s", self._container.short_id, exc)
        finally:
            self._handoff.put((self._stream, None))


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., Any], *args: Any) -> bool:
    """From a thread: run `callback` in the loop; False when the loop is closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        return False
    return True


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _in_thread(call: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Run a call that blocks as long as a command runs, in a daemon thread of its own."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the loop
            _call_soon(loop, _fail, future, exc)
        else:
            _call_soon(loop, _resolve, future, result)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


# -- helpers ----------------------------------------------------------------------------------
class _Missing(Exception):
    """The path is not in this container."""


def _inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _container_workdir(container: Container) -> str:
    return (container.attrs.get("Config") or {}).get("WorkingDir") or "/"


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def _daemon_reason(exc: BaseException, runner: DockerRunner) -> str:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException) and arg not in seen:
                seen.append(arg)
        current = current.__cause__ or current.__context__
    text = " ".join(str(e) for e in seen)
    for candidate in seen:
        if isinstance(candidate, FileNotFoundError):
            return "no such socket"
        if isinstance(candidate, ConnectionRefusedError):
            return "connection refused"
        if isinstance(candidate, PermissionError):
            return "permission denied"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return f"timed out after {runner.connect_timeout:g}s"
    if "No such file or directory" in text:
        return "no such socket"
    if "Connection refused" in text:
        return "connection refused"
    return str(exc)


def _fetch(container: Container, joined: str, base: str, path: str, dest: Path) -> str:
    """Copy `joined` out of `container` into `dest`, following symlinks only inside `base`."""
    current = joined
    for _ in range(MAX_LINKS):
        try:
            chunks, stat = container.get_archive(current)
        except docker.errors.NotFound as exc:
            raise _Missing() from exc
        except docker.errors.APIError as exc:
            raise FetchError(f"cannot read artifact {path!r}: {_explain(exc)}") from None
        target = stat.get("linkTarget") or ""
        resolved = (
            posixpath.normpath(posixpath.join(posixpath.dirname(current), target)) if target else current
        )
        if not _inside(resolved, base):
            _close(chunks)
            raise FetchError(f"artifact path {path!r} escapes the working directory")
        if resolved != current:
            _close(chunks)
            current = resolved
            continue
        if stat.get("isDir"):
            _close(chunks)
            raise FetchError(f"artifact path {path!r} is a directory")
        _extract_one(chunks, path, dest)
        return current
    raise FetchError(f"artifact path {path!r}: too many symbolic links")


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


def _extract_one(chunks: Iterator[bytes], path: str, dest: Path) -> None:
    """Write the one regular file of a tar stream to `dest` (through a temporary file: the tar may be large)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=dest.parent) as spool:
            for chunk in chunks:
                spool.write(chunk)
            spool.seek(0)
            with tarfile.open(fileobj=spool, mode="r:") as archive:
                member = archive.next()
                if member is None or not member.isfile():
                    raise FetchError(f"artifact path {path!r} is not a regular file")
                source = archive.extractfile(member)
                assert source is not None
                with source, open(dest, "wb") as out:
                    shutil.copyfileobj(source, out)
    except (OSError, tarfile.TarError, docker.errors.DockerException) as exc:
        raise FetchError(f"cannot copy artifact {path!r}: {exc}") from None


_GLOB_CHARS = re.compile(r"[*?\[]")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex matching relative paths as `pathlib.Path.glob(pattern)` does (`**` spans folders)."""
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    out: list[str] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append("(?:[^/]+/)*" if not last else "(?:[^/]+/)*[^/]+")
            continue
        out.append(_segment_regex(part) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _segment_regex(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = segment.find("]", i + 2 if segment[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                out.append(re.escape(char))
            else:
                body = segment[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _glob(container: Container, pattern: str, base: str) -> list[str]:
    """Files under `base` in `container` matching `pattern`: reads the archive of the pattern's
    fixed leading folder (`reports` of `reports/**/*.xml`) and matches the names in it."""
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    fixed = list(itertools.takewhile(lambda part: not _GLOB_CHARS.search(part) and part != "**", parts))
    if len(fixed) == len(parts):
        fixed = fixed[:-1]  # no wildcard: the last part is the file itself
    root = posixpath.normpath(posixpath.join(base, *fixed)) if fixed else base
    if not _inside(root, base):
        return []
    regex = glob_regex("/".join(parts))
    try:
        chunks, stat = container.get_archive(root)
    except docker.errors.NotFound:
        return []
    except docker.errors.APIError as exc:
        raise FetchError(f"cannot list {pattern!r}: {_explain(exc)}") from None
    if not stat.get("isDir"):
        _close(chunks)
        return []
    # The archive's names start with the folder's own name.
    top = posixpath.basename(root.rstrip("/")) or "."
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    with tempfile.TemporaryFile() as spool:
        for chunk in chunks:
            spool.write(chunk)
        spool.seek(0)
        with tarfile.open(fileobj=spool, mode="r:") as archive:
            for member in archive:
                name = posixpath.normpath(member.name)
                if name != top and not name.startswith(top + "/"):
                    continue
                absolute = (
                    posixpath.normpath(posixpath.join(posixpath.dirname(root), name))
                    if top != "."
                    else posixpath.normpath(posixpath.join(root, name))
                )
                relative = posixpath.relpath(absolute, base)
                if member.isfile():
                    files[absolute] = relative
                elif member.issym():
                    links[absolute] = posixpath.normpath(
                        posixpath.join(posixpath.dirname(absolute), member.linkname)
                    )
    matches = {relative for relative in files.values() if regex.match(relative)}
    for link, target in links.items():
        relative = posixpath.relpath(link, base)
        for _ in range(MAX_LINKS):
            if target not in links:
                break
            target = links[target]
        if target in files and _inside(target, base) and regex.match(relative):
            matches.add(relative)
    return sorted(matches)

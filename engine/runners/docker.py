"""Run commands in Docker containers, with the `docker` SDK (any Docker Engine API: dockerd, podman).

Each command gets a container of its own, created from the runner's image with the command, its
environment, working directory, volumes and limits, then started. Its stdout and stderr come from two
log streams followed apart, live. Stopping it is `docker stop` (SIGTERM to the container's PID 1,
SIGKILL after the grace period), which ends the whole container.

Artifacts are read with the archive API, which works on stopped containers: a finished container is
therefore kept (stopped) until the runner is closed, or until `KEEP_FINISHED` newer ones finished,
then removed, unless `keep`.

The SDK blocks. Short calls run in `asyncio.to_thread`; the calls that block for as long as a command
runs (following its logs, waiting for its exit) run in the runner's own thread pool, so that many
running containers never starve the loop's default executor.
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
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
from docker.models.containers import Container

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
#: threads per runner for the blocking log streams and waits (3 per running command)
STREAM_THREADS = 96


class DockerRunner:
    """Runs each command in a fresh container of `image`.

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
        #: one long-lived container for every command: not implemented yet (`start` says so)
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
        self._executor = ThreadPoolExecutor(STREAM_THREADS, thread_name_prefix="docker-stream")
        self._running: set[DockerCommand] = set()
        #: containers of finished commands, newest first, kept for `fetch` and `glob`
        self._finished: collections.deque[Container] = collections.deque()

    @property
    def where(self) -> str:
        return self.docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    @property
    def image_name(self) -> str:
        """The image with its tag, as people read it (`busybox` is `busybox:latest`)."""
        last = self.image.rsplit("/", 1)[-1]
        return self.image if ":" in last or "@" in last else f"{self.image}:latest"

    async def _blocking(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a call that blocks as long as a command runs, in the runner's own threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: call(*args, **kwargs))

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

    async def start(self, spec: CommandSpec) -> DockerCommand:
        if self.reuse:
            raise SpawnError("docker targets with reuse: true are not supported yet (use reuse: false)")
        command = self._command(spec)
        client = await self._docker()
        await self._ensure_image(client)
        options: dict[str, Any] = {
            "environment": dict(spec.env),
            "labels": {LABEL: "1"},
            "detach": True,
            "stdin_open": False,
            "tty": False,
        }
        workdir = spec.cwd or self.workdir
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
        running = DockerCommand(self, container)
        self._running.add(running)
        return running

    def _finish(self, command: DockerCommand) -> None:
        """`command` exited and its output was read: keep its container for fetches, for a while."""
        self._running.discard(command)
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
        """Where files may be: the newest finished containers first, then running ones."""
        return [*self._finished, *(command.container for command in self._running)]

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
        containers = [*self._finished, *(command.container for command in running)]
        self._finished.clear()
        self._running.clear()
        await asyncio.gather(*(self._remove(container) for container in containers))
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None
        self._executor.shutdown(wait=False, cancel_futures=True)


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
            result = await self._runner._blocking(self.container.wait)
        except docker.errors.NotFound:
            return 137  # removed under us (docker rm -f): killed
        except docker.errors.DockerException as exc:
            log.warning("container %s: cannot wait for its exit: %s", self.container.short_id, exc)
            return 255
        code = int(result.get("StatusCode", 255))
        return 255 if code < 0 else code

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        pending: dict[asyncio.Future[bytes | None], Stream] = {}
        try:
            # Opened lazily, by the first `next` in a worker thread, and both at once: podman
            # answers a log request only when the stream has something to say.
            streams = {Stream.STDOUT: self._follow(stdout=True), Stream.STDERR: self._follow(stdout=False)}
            for stream, frames in streams.items():
                pending[self._next(frames)] = stream
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    stream = pending.pop(future)
                    data = future.result()
                    if data is None:
                        continue
                    pending[self._next(streams[stream])] = stream
                    if data:
                        yield stream, data
        finally:
            for future in pending:
                future.cancel()
            if not self._output_done.done():
                self._output_done.set_result(None)

    def _follow(self, stdout: bool) -> Iterator[bytes]:
        try:
            yield from self.container.logs(stream=True, follow=True, stdout=stdout, stderr=not stdout)
        except docker.errors.NotFound:
            return  # removed under us

    def _next(self, frames: Iterator[bytes]) -> asyncio.Future[bytes | None]:
        def next_frame() -> bytes | None:
            try:
                return next(frames)
            except StopIteration:
                return None
            except (docker.errors.DockerException, OSError) as exc:
                log.warning("container %s: log stream broke: %s", self.container.short_id, exc)
                return None

        return asyncio.ensure_future(self._runner._blocking(next_frame))

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

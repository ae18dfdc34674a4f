"""Run commands in Docker containers, with the `docker` SDK (any Docker Engine API: dockerd, podman).

By default each command gets a container of its own, created from the runner's image with the
command, its environment, working directory, volumes and limits, then started
(`docker_container.DockerCommand`: its logs followed apart, live, by `docker_logs`). With `reuse`,
one container runs for the whole runner (a branch) and each command is run in it with `exec`
(`docker_exec`).

Artifacts are read with the archive API (`docker_files`), which works on stopped containers: a
finished container is therefore kept (stopped) until the runner is closed, or until
`KEEP_FINISHED` newer ones finished, then removed, unless `keep`. With `reuse`, artifacts come from
the live container; it is removed when the runner is closed, unless `keep` (then it is stopped).

The SDK blocks. Short calls run in `asyncio.to_thread`; the calls that block for as long as a command
runs each run in a daemon thread of their own (`docker_threads`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import posixpath
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from engine.runners.base import CommandSpec, FetchError, SpawnError
from engine.runners.docker_container import DockerCommand
from engine.runners.docker_errors import daemon_reason, explain, start_exit_code
from engine.runners.docker_exec import IDLE_COMMAND, DockerExec, start_exec
from engine.runners.docker_files import Missing, container_workdir, fetch_file, glob_files, inside

log = logging.getLogger(__name__)

#: PID 1 of a container (here, the script's shell) gets no default signal action: `docker stop`'s
#: SIGTERM did nothing and every cancel or timeout waited the whole kill grace for SIGKILL (137).
#: So a script runs under this small PID 1 that passes SIGTERM on and exits with the script's
#: status. Its own stderr goes to /dev/null: no "Terminated" job notice in the step's log.
FORWARD_TERM = (
    'exec 3>&2 2>/dev/null; "$@" 2>&3 3>&- & c=$!; exec 3>&-; trap "kill -TERM $c" TERM; '
    "while :; do wait $c; s=$?; kill -0 $c || exit $s; done"
)

#: finished containers kept for artifact fetches, newest first; older ones are removed
KEEP_FINISHED = 16
#: grace given to commands still running when the runner is closed
CLOSE_GRACE = 1.0
#: label put on every container this runner creates
LABEL = "io.stepflow.runner"


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
                f"cannot reach the Docker daemon at {self.where}: {daemon_reason(exc, self.connect_timeout)}"
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
                raise SpawnError(f"cannot pull image {self.image_name!r}: {explain(exc)}") from None
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
        if spec.argv is None:
            command = ["sh", "-c", FORWARD_TERM, "sh", *command]
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
            raise SpawnError(f"cannot create a container of {self.image_name!r}: {explain(exc)}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise SpawnError(
                f"cannot reach the Docker daemon at {self.where}: {daemon_reason(exc, self.connect_timeout)}"
            ) from None
        try:
            await asyncio.to_thread(container.start)
        except BaseException as exc:
            await self._remove(container)
            if isinstance(exc, docker.errors.APIError):
                raise SpawnError(
                    f"cannot start {command[0]!r} in {self.image_name!r}: {explain(exc)}", start_exit_code(exc)
                ) from None
            if isinstance(exc, (docker.errors.DockerException, OSError)):
                raise SpawnError(
                    f"cannot start a container at {self.where}: {daemon_reason(exc, self.connect_timeout)}"
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
        running = await start_exec(self, client, container, spec, command)
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
            base = posixpath.normpath(cwd or self.workdir or container_workdir(container))
            joined = posixpath.normpath(posixpath.join(base, path))
            if not inside(joined, base):
                raise FetchError(f"artifact path {path!r} escapes the working directory")
            try:
                return await asyncio.to_thread(fetch_file, container, joined, base, path, dest)
            except Missing:
                continue
        raise FetchError(f"artifact {path!r} not found in {cwd or 'the working directory'!r}")

    async def glob(self, pattern: str, cwd: str | None) -> list[str]:
        containers = self._containers()
        if not pattern or not containers:
            return []
        container = containers[0]
        base = posixpath.normpath(cwd or self.workdir or container_workdir(container))
        if posixpath.isabs(pattern):
            normal = posixpath.normpath(pattern)
            if not inside(normal, base) or normal == base:
                return []
            pattern = posixpath.relpath(normal, base)
        return await asyncio.to_thread(glob_files, container, pattern, base)

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

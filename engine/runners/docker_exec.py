"""Commands run with `exec` in one long-lived container (the Docker runner's `reuse: true` mode).

The container is started once from the image with an idle command (`IDLE_COMMAND`); each command
is run in it with `exec`, its stdout and stderr apart on the exec's stream, its exit code from
`exec_inspect`. The command is wrapped so that it reports its process group first (on stderr, taken
out of the output); stopping it signals that group inside the container, through another exec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.utils.socket import demux_adaptor, frames_iter

from engine.model import Stream
from engine.runners.base import CommandSpec, SpawnError
from engine.runners.docker_container import ContainerProcess
from engine.runners.docker_errors import daemon_reason, explain, start_exit_code
from engine.runners.docker_threads import Handoff, call_soon, in_thread, resolve

if TYPE_CHECKING:
    from engine.runners.docker import DockerRunner

log = logging.getLogger(__name__)

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


async def start_exec(
    runner: DockerRunner,
    client: docker.DockerClient,
    container: Container,
    spec: CommandSpec,
    command: list[str],
) -> DockerExec:
    """Run `command` in `container` with `exec`, wrapped (see EXEC_WRAPPER)."""
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
            f"the container {container.short_id} of {runner.image_name!r} (reuse: true) is gone"
        ) from None
    except docker.errors.APIError as exc:
        raise SpawnError(
            f"cannot run {command[0]!r} in the container {container.short_id} of "
            f"{runner.image_name!r}: {explain(exc)}",
            start_exit_code(exc),
        ) from None
    except (docker.errors.DockerException, OSError) as exc:
        raise SpawnError(
            f"cannot reach the Docker daemon at {runner.where}: {daemon_reason(exc, runner.connect_timeout)}"
        ) from None
    frames = (demux_adaptor(*frame) for frame in frames_iter(sock, tty=False))
    return DockerExec(runner, client, container, exec_id, frames, sock)


class DockerExec(ContainerProcess):
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
        self._output = Handoff()
        #: what to signal to stop the command (`-PGID` or `PID`); None when it never said
        self._target: asyncio.Future[str | None] = loop.create_future()
        self._stream_closed: asyncio.Future[None] = loop.create_future()
        self._frames = frames
        self._sock = sock
        threading.Thread(
            target=self._read, args=(loop,), name=f"docker-exec-{exec_id[:12]}", daemon=True
        ).start()
        self._watch_end()

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
                            call_soon(loop, resolve, self._target, target or None)
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
            call_soon(loop, resolve, self._target, None)
            call_soon(loop, resolve, self._stream_closed, None)

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

    async def terminate(self, grace: float) -> None:
        """SIGTERM to the command's process group in the container, SIGKILL after `grace`."""
        target = await asyncio.shield(self._target)
        if target is not None:
            tenths = max(0, math.ceil(grace * 10))
            reaper = ["sh", "-c", EXEC_REAPER, "sh", target, str(tenths)]
            try:
                await in_thread(
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


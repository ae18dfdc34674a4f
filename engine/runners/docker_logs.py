"""Following a container's log: one stream (stdout or stderr) read in a thread of its own."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from engine.model import Stream
from engine.runners.docker_threads import Handoff

log = logging.getLogger(__name__)

#: seconds before a log follow that ended (or timed out) while the container runs is opened again
REFOLLOW_DELAY = 0.2


class LogReader:
    """One log stream of a container (stdout or stderr), read in a thread of its own into a handoff.

    Following, it opens the log again (skipping what it handed over already) when the follow ends
    or times out, until stopped: the caller stops it once the container exited. podman sends a
    follow's headers only with its first line, so a silent stream times out (`api_timeout`)."""

    def __init__(
        self, container: Container, stream: Stream, handoff: Handoff, follow: bool, skip: int = 0
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

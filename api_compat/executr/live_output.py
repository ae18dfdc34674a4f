"""A running job's output on its way to the server while the job runs (`POST /api/v1/jobs/{id}/output`,
stepflow's extension), so that its lines and marker steps show live.

The job's pipes are read as always (`feed` only appends to a buffer: nothing here can slow the job
down or block it). Whole lines are sent in batches, every `interval` seconds or as soon as
`batch_bytes` wait, one request at a time. Each chunk says where it starts in its stream, in bytes of
the UTF-8 sent, so the server takes a chunk sent twice once, and at the end replays from the report
only what it did not receive.

Streaming is a bonus: when the server is slow (`max_pending` bytes wait), refuses a batch or cannot
be reached, this job's stream stops (said in the worker's log) and its output arrives with its result,
as it always did. A server without the route (the reference executr: 404) turns streaming off for the
whole worker, silently (`Streaming.available`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api_compat.executr.client import ExecutrClient, ExecutrError, ExecutrUnavailable, lacks_route

#: seconds between batches
INTERVAL = 0.1
#: bytes of output that make a batch go at once (and the most one request carries)
BATCH_BYTES = 64 * 1024
#: bytes waiting to be sent beyond which the stream gives up (the server does not keep up)
MAX_PENDING = 8 * 1024 * 1024
#: seconds one batch may take
REQUEST_TIMEOUT = 10.0
#: seconds the last batches may take once the job ended (its result waits for them)
CLOSE_TIMEOUT = 5.0


@dataclass(slots=True)
class Streaming:
    """The worker's switch: off for good once the server shows it has no output route."""

    available: bool = True


class LiveOutput:
    def __init__(self, client: ExecutrClient, job_id: str, executor_id: str, streaming: Streaming,
                 say: Callable[[str], None], *, interval: float = INTERVAL, batch_bytes: int = BATCH_BYTES,
                 max_pending: int = MAX_PENDING, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self._client = client
        self._job_id = job_id
        self._executor_id = executor_id
        self._streaming = streaming
        self._say = say
        self._interval = interval
        self._batch_bytes = batch_bytes
        self._max_pending = max_pending
        self._request_timeout = request_timeout
        self.active = streaming.available
        #: bytes read of each stream that do not end a line yet
        self._partial: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        #: bytes of UTF-8 of each stream queued so far (where its next chunk starts)
        self._offset = {"stdout": 0, "stderr": 0}
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0
        self._due = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.active:
            self._task = asyncio.create_task(self._run(), name=f"output-{self._job_id}")

    def feed(self, stream: str, chunk: bytes) -> None:
        """Output the job printed on `stream` ("stdout" or "stderr"); never blocks."""
        if not self.active:
            return
        buf = self._partial[stream]
        buf += chunk
        cut = buf.rfind(b"\n") + 1
        if not cut and len(buf) >= self._batch_bytes:  # a long line: send it in pieces
            cut = _char_boundary(buf, self._batch_bytes)
        if cut:
            self._queue(stream, bytes(buf[:cut]))
            del buf[:cut]

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """The job's output ended: send what is left, within `timeout` seconds (what does not get
        there arrives with the result)."""
        if self._task is None:
            return
        if self.active:
            for stream, buf in self._partial.items():
                if buf:
                    self._queue(stream, bytes(buf))
                    buf.clear()
        self._closing = True
        self._due.set()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._stop(f"the last of it did not reach the server within {timeout:g} s")
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def abandon(self) -> None:
        """The job is no longer ours: send nothing more."""
        self._stop(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _queue(self, stream: str, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        size = len(text.encode("utf-8", "surrogatepass"))
        self._pending.append({"stream": stream, "offset": self._offset[stream], "text": text})
        self._offset[stream] += size
        self._pending_bytes += size
        if self._pending_bytes > self._max_pending:
            self._stop(f"more than {self._max_pending // (1024 * 1024)} MiB waited to be sent")
        elif self._pending_bytes >= self._batch_bytes:
            self._due.set()

    def _stop(self, why: str | None) -> None:
        """Stream no more of this job (its output goes with its result); `why` goes to the log."""
        if not self.active:
            return
        self.active = False
        self._pending.clear()
        self._pending_bytes = 0
        for buf in self._partial.values():
            buf.clear()
        self._due.set()
        if why is not None:
            self._say(f"job {self._job_id}: live output stopped ({why}); its output goes with its result")

    async def _run(self) -> None:
        while self.active:
            if not self._pending and self._closing:
                return
            if not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._due.wait()
            self._due.clear()
            while self._pending and self.active:
                await self._send(self._take_batch())

    def _take_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0]["text"]) <= self._batch_bytes):
            chunk = self._pending.pop(0)
            size += len(chunk["text"])
            batch.append(chunk)
        self._pending_bytes = max(self._pending_bytes - size, 0)
        return batch

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        try:
            await self._client.output(self._job_id, self._executor_id, batch, timeout=self._request_timeout)
        except ExecutrError as exc:
            if lacks_route(exc):
                self._streaming.available = False  # the reference server: its output goes at the end
                self._stop(None)
            else:
                self._stop(f"the server refused it: {exc.status} {exc.message}")
        except ExecutrUnavailable as exc:
            self._stop(str(exc))


def _char_boundary(data: bytearray, limit: int) -> int:
    """A cut at most `limit` bytes in that does not split a UTF-8 character."""
    cut = limit
    while cut > 0 and (data[cut] & 0xC0) == 0x80 and limit - cut < 3:
        cut -= 1
    return cut

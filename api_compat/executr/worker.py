"""`stepflow worker`: claims jobs from an executr queue (`stepflow serve`, or the reference executr
server), runs them here, and reports how they ended.

Each of `concurrency` slots loops: claim (a long poll where the server offers one, plain polling
otherwise), fetch the binary (cached by its sha256, verified before anything runs), run it with the
job's arguments and environment in a fresh directory and its own process group, heartbeat while it
runs, then complete (exit 0) or fail (anything else) with its output, each stream cut at 1 MiB.

SIGTERM or Ctrl-C stops claiming; running jobs get `grace` seconds to end, then are killed and
failed with "worker stopped". A second signal skips the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from api_compat.executr.binary_cache import BinaryCache, JobError
from api_compat.executr.client import ExecutrClient, ExecutrError, ExecutrUnavailable, Job
from api_compat.executr.job_dirs import JobDir, sweep
from api_compat.executr.live_output import LiveOutput, Streaming

#: bytes of stdout and of stderr kept per job (the API's own limit)
OUTPUT_LIMIT = 1024 * 1024
#: what a binary's download may take
DOWNLOAD_TIMEOUT = 300.0
#: seconds a long-poll claim asks the server to hold the request
LONG_POLL = 20.0
#: how often a slot polls a server that answers 204 at once (no long poll)
POLL_INTERVAL = 1.0
#: seconds between SIGTERM and SIGKILL to a job's process group when it must stop
KILL_GRACE = 5.0
#: a job's PATH when its env_variables set none (the rest of the worker's environment is not passed)
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class WorkerError(Exception):
    """The worker cannot run at all (a refused token, a server that is not an executr server)."""


@dataclass(slots=True)
class WorkerOptions:
    server: str
    token: str | None = None
    concurrency: int = 1
    executor_id: str = ""
    cache_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "stepflow-worker-cache")
    cache_max_bytes: int = 1024 * 1024 * 1024
    work_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "stepflow-worker-jobs")
    heartbeat: float = 5.0
    grace: float = 30.0
    long_poll: float = LONG_POLL
    poll_interval: float = POLL_INTERVAL
    download_timeout: float = DOWNLOAD_TIMEOUT
    quiet: bool = False
    #: send each job's output to the server as it is printed (where the server takes it)
    stream: bool = True


def default_executor_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


# -- output -------------------------------------------------------------------------------------------
def cut_output(data: bytes, total: int, limit: int = OUTPUT_LIMIT) -> str:
    """The text to report for a stream that wrote `total` bytes of which `data` (the head) was kept:
    whole when it fits in `limit` bytes, else cut on a UTF-8 character boundary with a note saying so,
    the note included in the limit."""
    if total <= limit:
        return data.decode("utf-8", "replace")
    note = f"\n[stepflow worker: output truncated: {total} bytes written, the first {{kept}} kept]\n"
    room = limit - len(note.format(kept=limit).encode())
    head = data[:room]
    # never end inside a character: an incomplete last one starts at most 3 bytes from the end
    cut = len(head)
    for back in range(1, min(4, cut + 1)):
        byte = head[cut - back]
        if byte & 0xC0 == 0x80:  # a continuation byte: look further back for the lead byte
            continue
        if byte >= 0xC0 and back < (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4):
            cut -= back  # its lead byte, with too few continuation bytes after it
        break
    head = head[:cut]
    return head.decode("utf-8", "replace") + note.format(kept=len(head))


async def _drain(stream: asyncio.StreamReader, limit: int,
                 feed: Callable[[bytes], None] | None = None) -> tuple[bytes, int]:
    """Read a pipe to its end, keeping the first `limit` bytes (and giving each chunk to `feed`);
    (kept, total written)."""
    kept = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        if feed is not None:
            feed(chunk)
        total += len(chunk)
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept), total


# -- the worker ------------------------------------------------------------------------------------------
#: the bytes of each stream kept when the server refuses a result as too large (413)
SMALL_OUTPUT_LIMIT = 256 * 1024


@dataclass(slots=True)
class Outcome:
    exit_code: int
    #: None: exit 0 (complete); else the error_message of a failure
    error: str | None
    #: the head of each stream and the bytes it wrote in all
    out: bytes = b""
    out_total: int = 0
    err: bytes = b""
    err_total: int = 0

    def texts(self, limit: int = OUTPUT_LIMIT) -> tuple[str, str]:
        return cut_output(self.out, self.out_total, limit), cut_output(self.err, self.err_total, limit)


class Worker:
    def __init__(self, options: WorkerOptions, *, say: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.executor_id = options.executor_id or default_executor_id()
        self.client = ExecutrClient(options.server, token=options.token,
                                    connections=max(10, options.concurrency * 2 + 4))
        self.cache = BinaryCache(options.cache_dir, options.cache_max_bytes, options.download_timeout)
        self.stopping = asyncio.Event()
        self.killing = asyncio.Event()  # the grace is over (or a second signal came)
        self.fatal: str | None = None
        self.jobs_done = 0
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._ip = ""
        #: off once the server shows it takes no live output (the reference executr)
        self.streaming = Streaming(options.stream)

    def say(self, message: str) -> None:
        if not self.options.quiet:
            self._say(f"{time.strftime('%H:%M:%S')} worker {self.executor_id}: {message}")

    def stop(self) -> None:
        """First call: stop claiming and let running jobs end within the grace; second: end them now."""
        if self.stopping.is_set():
            self.killing.set()
            return
        self.say("stopping: no more claims; running jobs get "
                 f"{self.options.grace:g} s to finish (signal again to stop them now)")
        self.stopping.set()

    async def run(self) -> int:
        """Run until stopped; 0, or 1 when the server refused the worker."""
        self._ip = _local_address(self.client.base_url)
        self.options.work_dir.mkdir(parents=True, exist_ok=True)
        for left in sweep(self.options.work_dir):
            self.say(f"removed {left}, left by a worker that died")
        self.say(f"serving {self.client.base_url} with {self.options.concurrency} slot(s)")
        slots = [asyncio.create_task(self._slot(n)) for n in range(self.options.concurrency)]
        grace_timer = asyncio.create_task(self._grace_timer())
        try:
            await asyncio.gather(*slots)
        finally:
            grace_timer.cancel()
            for task in slots:
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            await self.cache.close()
            await self.client.close()
        self.say(f"stopped after {self.jobs_done} job(s)")
        if self.fatal:
            raise WorkerError(self.fatal)
        return 0

    async def _grace_timer(self) -> None:
        await self.stopping.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.grace):
                await self.killing.wait()
        self.killing.set()

    async def _slot(self, number: int) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                job = await self._claim()
            except ExecutrUnavailable as exc:
                self.say(f"server unreachable ({exc}); retrying in {backoff:g} s")
                await self._pause(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            except ExecutrError as exc:
                if exc.status in (401, 403):
                    self.fatal = f"the server refused the worker: {exc.message} (give --token or STEPFLOW_TOKEN)"
                    self.stopping.set()
                    self.killing.set()
                    return
                if exc.status == 404:
                    self.fatal = f"{self.client.base_url} has no executr API (POST /api/v1/jobs/claim: 404)"
                    self.stopping.set()
                    self.killing.set()
                    return
                self.say(f"claim refused: {exc}; retrying in {backoff:g} s")
                await self._pause(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            if job is not None:
                await self._execute(job)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()

    async def _claim(self) -> Job | None:
        """One claim, abandoned when the worker stops; None: nothing to do yet."""
        wait = self.options.long_poll
        claim = asyncio.ensure_future(self.client.claim(self.executor_id, self._ip, wait=wait))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({claim, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not claim.done():
            claim.cancel()
            with contextlib.suppress(BaseException):
                await claim
            return None
        result = claim.result()
        if result.job is None and (not wait or result.elapsed < min(wait / 4, 1.0)):
            await self._pause(self.options.poll_interval)  # no long poll here: poll
        return result.job

    async def _execute(self, job: Job) -> None:
        job_id = str(job.get("id", ""))
        self.say(f"claimed job {job_id} ({job.get('type', '?')}, {job.get('priority', '?')})")
        lost = asyncio.Event()  # the server says the job is no longer ours
        heartbeats = asyncio.create_task(self._heartbeats(job_id, lost))
        try:
            outcome = await self._run(job, lost)
        finally:
            heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeats
        if lost.is_set():
            self.say(f"job {job_id}: no longer ours on the server (cancelled or reassigned); result dropped")
            return
        await self._report(job_id, outcome)
        self.jobs_done += 1

    async def _heartbeats(self, job_id: str, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.options.heartbeat)
            try:
                await self.client.heartbeat(job_id, self.executor_id)
            except ExecutrError as exc:
                if exc.status in (400, 404, 409, 410):
                    self.say(f"job {job_id}: heartbeat refused ({exc.message}); stopping it")
                    lost.set()
                    return
                self.say(f"job {job_id}: heartbeat failed: {exc}")
            except ExecutrUnavailable as exc:
                self.say(f"job {job_id}: heartbeat failed: {exc}")

    async def _run(self, job: Job, lost: asyncio.Event) -> Outcome:
        job_id = str(job.get("id", ""))
        url = str(job.get("binary_url", ""))
        job_dir = JobDir(self.options.work_dir, job_id)
        try:
            binary = job_dir.binary(_binary_name(url))
            try:
                await self.cache.place(url, str(job.get("binary_sha256", "")), binary)
            except JobError as exc:
                return Outcome(-1, str(exc))
            arguments = [str(a) for a in job.get("arguments") or []]
            env = {str(k): str(v) for k, v in (job.get("env_variables") or {}).items()}
            env.setdefault("PATH", DEFAULT_PATH)
            try:
                proc = await _spawn([str(binary), *arguments], job_dir.work, env)
            except OSError as exc:
                return Outcome(-1, f"cannot start the binary: {exc.strerror or exc}")
            assert proc.stdout is not None and proc.stderr is not None
            live = LiveOutput(self.client, job_id, self.executor_id, self.streaming, self.say)
            live.start()
            reading = asyncio.gather(_drain(proc.stdout, OUTPUT_LIMIT, lambda b: live.feed("stdout", b)),
                                     _drain(proc.stderr, OUTPUT_LIMIT, lambda b: live.feed("stderr", b)))
            done = asyncio.ensure_future(proc.wait())
            stopper = asyncio.ensure_future(_first(self.killing, lost))
            await asyncio.wait({done, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopped = not done.done()
            stopper.cancel()
            if stopped:
                await _kill_group(proc)
            try:
                async with asyncio.timeout(2.0):  # what the job left running may hold its pipes open
                    (out, out_total), (err, err_total) = await asyncio.shield(reading)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                (out, out_total), (err, err_total) = await reading
            code = await done
            if lost.is_set():
                await live.abandon()
            else:
                await live.close()  # the rest of what streamed reaches the server before the result
        finally:
            job_dir.remove()
        streams = (out, out_total, err, err_total)
        if stopped:
            return Outcome(-1, "worker stopped before the job ended", *streams)
        if code == 0:
            return Outcome(0, None, *streams)
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return Outcome(128 - code, f"killed by signal {name}", *streams)
        return Outcome(code, f"exit code {code}", *streams)

    async def _report(self, job_id: str, outcome: Outcome) -> None:
        delay = 0.5
        limit = OUTPUT_LIMIT
        for attempt in range(6):
            stdout, stderr = outcome.texts(limit)
            try:
                if outcome.error is None:
                    await self.client.complete(job_id, self.executor_id, stdout=stdout, stderr=stderr, exit_code=0)
                    self.say(f"job {job_id}: completed")
                else:
                    await self.client.fail(job_id, self.executor_id, error_message=outcome.error,
                                           stdout=stdout, stderr=stderr, exit_code=outcome.exit_code)
                    self.say(f"job {job_id}: failed: {outcome.error}")
                return
            except ExecutrError as exc:
                if exc.status == 413 and limit > SMALL_OUTPUT_LIMIT:  # a server with a smaller body limit
                    self.say(f"job {job_id}: the server refused 1 MiB of output; sending "
                             f"{SMALL_OUTPUT_LIMIT // 1024} KiB of each stream")
                    limit = SMALL_OUTPUT_LIMIT
                    continue
                self.say(f"job {job_id}: the server refused the result: {exc}")
                return
            except ExecutrUnavailable as exc:
                if attempt == 5:
                    self.say(f"job {job_id}: result not delivered: {exc}")
                    return
                await asyncio.sleep(delay)
                delay *= 2


async def _spawn(argv: list[str], cwd: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start the job in its own process group. "Text file busy" (another slot's fork inherited the
    binary's copy while it was being written) passes in a moment: tried again."""
    for attempt in range(20):
        try:
            return await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            if exc.errno != errno.ETXTBSY or attempt == 19:
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def _binary_name(url: str) -> str:
    """The name a job's binary gets in its folder: the URL's last part, when it is a plain name."""
    name = Path(urlparse(url).path).name
    ok = name and name not in (".", "..") and all(c.isalnum() or c in "._-" for c in name)
    return name if ok else "binary"


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the job's process group, SIGKILL it after KILL_GRACE."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        if wait is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await proc.wait()
                return


def _local_address(base_url: str) -> str:
    """This machine's address as the server would see it (the reference sends its host name)."""
    parsed = urlparse(base_url)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((parsed.hostname or "127.0.0.1", parsed.port or 80))
            return str(sock.getsockname()[0])
    except OSError:
        return socket.gethostname()


async def run_worker(options: WorkerOptions) -> int:
    """`stepflow worker`: run until SIGTERM/SIGINT (twice: without the grace)."""
    worker = Worker(options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        return await worker.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

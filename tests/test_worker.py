"""`stepflow worker` against a real `stepflow serve`: real worker processes, binaries (shell scripts)
served by a real HTTP server in the test, jobs submitted through the executr API (/api/v1)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import http.server
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api_compat.executr.client import ExecutrClient, ExecutrError
from api_compat.executr.worker import OUTPUT_LIMIT

ROOT = Path(__file__).resolve().parents[1]
#: seconds without a heartbeat after which the server gives a running job back to the queue
HEARTBEAT_TIMEOUT = 2.0
HEARTBEAT_TIMEOUT_ENV = "STEPFLOW_EXECUTR_HEARTBEAT_TIMEOUT"
FINISHED = ("completed", "failed", "cancelled")

SCRIPTS = {
    "hello.sh": '#!/bin/sh\necho "hello $1 from $GREETING in $(pwd)"\necho "to stderr" >&2\n',
    "exit3.sh": '#!/bin/sh\necho "partial"\necho "it broke" >&2\nexit 3\n',
    # the marker file says whether the binary ran at all
    "marker.sh": '#!/bin/sh\ntouch "$MARKS/ran-$1"\necho marked\n',
    # 2 MiB of two-byte characters (é) after one ASCII byte: any cut at 1 MiB lands mid-character
    "big.sh": '#!/bin/sh\nprintf x\ni=0\nwhile [ $i -lt 16 ]; do\n'
              '  python3 -c "import sys; sys.stdout.write(\'\\u00e9\' * 65536)"\n  i=$((i + 1))\ndone\n',
    # first run: note it started, then wait a long time; a later run (another attempt) ends at once
    "slow-once.sh": '#!/bin/sh\nif mkdir "$MARKS/lock-$1" 2>/dev/null; then\n'
                    '  echo $$ > "$MARKS/lock-$1/pid"\n  touch "$MARKS/started-$1"\n  sleep "${2:-60}"\n'
                    '  echo "slow run ended"\n  exit 0\nfi\necho "second run"\n',
    # note the start, sleep $2 seconds, note the end
    "sleeper.sh": '#!/bin/sh\ntouch "$MARKS/started-$1"\nsleep "$2"\ntouch "$MARKS/ended-$1"\necho slept\n',
    "append.sh": '#!/bin/sh\necho "$1" >> "$MARKS/ran.txt"\n',
}


# -- the binaries' HTTP server ------------------------------------------------------------------------------
@dataclass
class Binaries:
    base: str
    folder: Path

    def job(self, name: str, *args: str, env: dict[str, str] | None = None, sha256: str | None = None,
            priority: str = "background") -> dict[str, Any]:
        digest = sha256 or hashlib.sha256((self.folder / name).read_bytes()).hexdigest()
        return {"type": name.replace(".", "-"), "binary_url": f"{self.base}/{name}", "binary_sha256": digest,
                "arguments": list(args), "env_variables": env or {}, "priority": priority}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def binaries(tmp_path: Path) -> Iterator[Binaries]:
    folder = tmp_path / "binaries"
    folder.mkdir()
    for name, text in SCRIPTS.items():
        (folder / name).write_text(text)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Binaries(f"http://127.0.0.1:{httpd.server_address[1]}", folder)
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def marks(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "marks"
    folder.mkdir()
    yield folder
    # a job whose worker was killed -9 keeps running in its own process group: end it
    for pid_file in folder.glob("lock-*/pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


# -- stepflow serve and stepflow worker ------------------------------------------------------------------
def _env(data: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STEPFLOW_STORAGE_PATH": str(data), "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`stepflow serve` on a free port, with a short heartbeat timeout; its base URL."""
    with serving(tmp_path / "serve-data") as url:
        yield url


@contextlib.contextmanager
def serving(data: Path) -> Iterator[str]:
    """`stepflow serve` on a free port storing in `data`, with a short heartbeat timeout; its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepflow.main", "serve", "--port", "0", "--ws-port", "0"],
        env=_env(data, **{HEARTBEAT_TIMEOUT_ENV: str(HEARTBEAT_TIMEOUT)}), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = None
        for _ in range(50):
            line = proc.stdout.readline()
            if not line:
                break
            if match := re.search(r"serving (http://\S+)", line):
                url = match[1].rstrip("/")
                break
        assert url, "stepflow serve did not start"
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
        yield url
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, as a user stopping it would; SIGKILL if it has not ended 20 s later."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Workers:
    def __init__(self, tmp_path: Path, server: str) -> None:
        self.tmp_path, self.server = tmp_path, server
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, worker_id: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"worker-{worker_id}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "stepflow.main", "worker", "--server", self.server, "--id", worker_id,
             "--cache-dir", str(self.tmp_path / f"cache-{worker_id}"),
             "--work-dir", str(self.tmp_path / f"work-{worker_id}"), "--heartbeat", "0.5", *args],
            env=_env(self.tmp_path / "worker-data", **(env or {})), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, worker_id: str) -> str:
        return (self.tmp_path / f"worker-{worker_id}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(tmp_path: Path, server: str) -> Iterator[Workers]:
    started = Workers(tmp_path, server)
    try:
        yield started
    finally:
        started.stop_all()


async def finished(client: ExecutrClient, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The job once it has ended (polled: the API has no event for it)."""
    async with asyncio.timeout(timeout):
        while True:
            job = await client.get(job_id)
            if job["status"] in FINISHED:
                return job
            await asyncio.sleep(0.05)


async def appears(path: Path, timeout: float = 30.0) -> None:
    """The file exists (a job's script writes it; polled: nothing else says so)."""
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if path.exists():
                return
            await asyncio.sleep(0.02)


async def exits(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


# -- the tests ------------------------------------------------------------------------------------------------
async def test_a_submitted_job_runs_on_the_worker_and_completes(server: str, workers: Workers,
                                                                binaries: Binaries) -> None:
    workers.start("w1")
    async with ExecutrClient(server) as client:
        started = time.monotonic()
        job_id = (await client.submit(binaries.job("hello.sh", "world", env={"GREETING": "the job"})))["id"]
        job = await finished(client, job_id)
        took = time.monotonic() - started
    assert job["status"] == "completed", job
    assert job["exit_code"] == 0
    assert job["stdout"].startswith("hello world from the job in ")
    assert "stepflow-worker" not in job["stdout"] and str(workers.tmp_path / "work-w1") in job["stdout"]
    assert job["stderr"] == "to stderr\n"
    assert job["executor_id"] == "w1"
    assert took < 10, f"the job took {took:.1f} s from submit to done"
    # its fresh directory is removed once it has ended
    assert list((workers.tmp_path / "work-w1").iterdir()) == []


async def test_a_nonzero_exit_fails_the_job_with_its_output(server: str, workers: Workers,
                                                            binaries: Binaries) -> None:
    workers.start("w1")
    async with ExecutrClient(server) as client:
        job = await finished(client, (await client.submit(binaries.job("exit3.sh")))["id"])
    assert job["status"] == "failed", job
    assert job["exit_code"] == 3
    assert "exit code 3" in job.get("error_message", "")
    assert job["stdout"] == "partial\n" and job["stderr"] == "it broke\n"


async def test_a_sha256_mismatch_fails_the_job_before_anything_runs(server: str, workers: Workers,
                                                                    binaries: Binaries, marks: Path) -> None:
    workers.start("w1")
    async with ExecutrClient(server) as client:
        bad = binaries.job("marker.sh", "bad", env={"MARKS": str(marks)}, sha256="ab" * 32)
        job = await finished(client, (await client.submit(bad))["id"])
        # the same binary with its true hash runs: the bad download was not cached under its name
        good = await finished(client, (await client.submit(binaries.job("marker.sh", "good",
                                                                         env={"MARKS": str(marks)})))["id"])
    assert job["status"] == "failed", job
    assert "sha256 mismatch" in job.get("error_message", "") and "ab" * 32 in job["error_message"]
    assert not (marks / "ran-bad").exists()
    assert good["status"] == "completed" and (marks / "ran-good").exists()


async def test_output_past_1_mib_is_cut_on_a_character_boundary_with_a_note(
        server: str, workers: Workers, binaries: Binaries) -> None:
    workers.start("w1")
    async with ExecutrClient(server) as client:
        job = await finished(client, (await client.submit(binaries.job("big.sh")))["id"])
    assert job["status"] == "completed", {k: v for k, v in job.items() if k not in ("stdout", "stderr")}
    stdout = job["stdout"]
    assert len(stdout.encode()) <= OUTPUT_LIMIT
    assert stdout.startswith("xéé") and "\ufffd" not in stdout
    assert "output truncated: 2097153 bytes written" in stdout[-200:]


async def test_two_workers_never_run_the_same_job(server: str, workers: Workers, binaries: Binaries,
                                                  marks: Path) -> None:
    workers.start("a", "--concurrency", "4")
    workers.start("b", "--concurrency", "4")
    async with ExecutrClient(server) as client:
        ids = [(await client.submit(binaries.job("append.sh", str(n), env={"MARKS": str(marks)})))["id"]
               for n in range(60)]
        jobs = [await finished(client, job_id, timeout=60) for job_id in ids]
    assert all(job["status"] == "completed" for job in jobs)
    ran = (marks / "ran.txt").read_text().split()
    assert sorted(ran, key=int) == [str(n) for n in range(60)]  # each once, none twice
    assert {job["executor_id"] for job in jobs} <= {"a", "b"}


async def test_a_killed_workers_job_goes_back_to_the_queue_and_completes_on_another(
        server: str, workers: Workers, binaries: Binaries, marks: Path) -> None:
    doomed = workers.start("doomed")
    async with ExecutrClient(server) as client:
        job_id = (await client.submit(binaries.job("slow-once.sh", "k", env={"MARKS": str(marks)})))["id"]
        await appears(marks / "started-k")
        assert (await client.get(job_id))["executor_id"] == "doomed"
        doomed.kill()  # SIGKILL: no goodbye, no more heartbeats
        doomed.wait()
        workers.start("survivor")
        job = await finished(client, job_id, timeout=HEARTBEAT_TIMEOUT + 30)
    assert job["status"] == "completed", job
    assert job["executor_id"] == "survivor"
    assert job["stdout"] == "second run\n"
    if "attempts" in job:
        assert [a["executor_id"] for a in job["attempts"]][-2:] == ["doomed", "survivor"]


async def test_sigterm_lets_a_running_job_finish_then_the_worker_exits(
        server: str, workers: Workers, binaries: Binaries, marks: Path) -> None:
    proc = workers.start("w1", "--grace", "30")
    async with ExecutrClient(server) as client:
        job_id = (await client.submit(binaries.job("sleeper.sh", "t", "1", env={"MARKS": str(marks)})))["id"]
        await appears(marks / "started-t")
        proc.send_signal(signal.SIGTERM)
        # a job queued after the signal is left for other workers
        later = (await client.submit(binaries.job("hello.sh", "later")))["id"]
        assert await exits(proc, 20) == 0
        job = await client.get(job_id)
        assert (await client.get(later))["status"] == "pending"
    assert job["status"] == "completed" and job["stdout"] == "slept\n"
    assert "stopping" in workers.log("w1")


async def test_a_job_outliving_the_grace_is_stopped_and_failed(
        server: str, workers: Workers, binaries: Binaries, marks: Path) -> None:
    proc = workers.start("w1", "--grace", "0.5")
    async with ExecutrClient(server) as client:
        job_id = (await client.submit(binaries.job("sleeper.sh", "g", "60", env={"MARKS": str(marks)})))["id"]
        await appears(marks / "started-g")
        proc.send_signal(signal.SIGTERM)
        assert await exits(proc, 20) == 0
        job = await client.get(job_id)
    assert job["status"] == "failed", job
    assert "worker stopped" in job.get("error_message", "")
    assert not (marks / "ended-g").exists()


async def test_plain_polling_works_too(server: str, workers: Workers, binaries: Binaries) -> None:
    """`--wait 0`: claims without the long poll, as against the reference server."""
    workers.start("poller", "--wait", "0", "--poll-interval", "0.2")
    async with ExecutrClient(server) as client:
        job = await finished(client, (await client.submit(binaries.job("hello.sh", "poll")))["id"])
    assert job["status"] == "completed" and job["stdout"].startswith("hello poll ")


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`stepflow serve` with auth on, and a token `stepflow token create` minted for it."""
    data = tmp_path / "auth-data"
    token = subprocess.run([sys.executable, "-m", "stepflow.main", "token", "create"],
                           env=_env(data), cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepflow.main", "serve", "--port", "0", "--ws-port", "0"],
        env=_env(data, STEPFLOW_AUTH_ENABLED="true"), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = next(m[1] for line in iter(proc.stdout.readline, "")
                   if (m := re.search(r"serving (http://\S+)", line)))
        threading.Thread(target=proc.stdout.read, daemon=True).start()
        yield url.rstrip("/"), token
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


async def test_a_worker_needs_the_token_when_auth_is_on(tmp_path: Path, auth_server: tuple[str, str],
                                                        binaries: Binaries) -> None:
    url, token = auth_server
    crew = Workers(tmp_path, url)
    try:
        refused = crew.start("anonymous")
        assert await exits(refused, 30) != 0
        assert "token" in crew.log("anonymous")
        crew.start("tok", env={"STEPFLOW_TOKEN": token})
        async with ExecutrClient(url, token=token) as client:
            job = await finished(client, (await client.submit(binaries.job("hello.sh", "auth")))["id"])
        assert job["status"] == "completed" and job["executor_id"] == "tok"
        with pytest.raises(ExecutrError) as refused_client:
            async with ExecutrClient(url) as anonymous:
                await anonymous.get(job["id"])
        assert refused_client.value.status == 401
    finally:
        crew.stop_all()


async def test_a_worker_that_missed_its_heartbeats_stops_the_job_and_drops_its_result(
        server: str, workers: Workers, binaries: Binaries, marks: Path) -> None:
    """Its heartbeats come later than the server's timeout (as after a network cut): the job went to
    another worker; the late one's next heartbeat is refused, so it ends its copy and reports nothing."""
    # one job at a time, heartbeats far apart: its copy holds its only slot until its next heartbeat
    # is refused, so the requeued job waits for "prompt" (however slow it is to start) rather than
    # going back to "late"
    late = workers.start("late", "--concurrency", "1", "--heartbeat", str(HEARTBEAT_TIMEOUT * 5))
    async with ExecutrClient(server) as client:
        job_id = (await client.submit(binaries.job("slow-once.sh", "h", env={"MARKS": str(marks)})))["id"]
        await appears(marks / "started-h")
        workers.start("prompt")
        job = await finished(client, job_id, timeout=HEARTBEAT_TIMEOUT + 30)
        assert job["status"] == "completed" and job["executor_id"] == "prompt" and job["stdout"] == "second run\n"
        pid = int((marks / "lock-h" / "pid").read_text())
        async with asyncio.timeout(HEARTBEAT_TIMEOUT * 5 + 15):
            for _ in itertools.count():
                if "no longer ours" in workers.log("late"):
                    break
                await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_gone, pid, 10), "the late worker's copy of the job still runs"
        assert (await client.get(job_id))["stdout"] == "second run\n"  # not overwritten by the late one
    assert late.poll() is None  # the worker itself goes on


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("char", ["é", "€", "𝄞"])  # 2, 3 and 4 bytes in UTF-8
@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_cut_output_keeps_whole_characters_and_says_how_much_was_written(char: str, shift: int) -> None:
    from api_compat.executr.worker import cut_output

    data = ("x" * shift + char * 1000).encode()
    text = cut_output(data[:500], len(data), limit=300)
    assert len(text.encode()) <= 300
    kept, note = text.split("\n[stepflow worker: output truncated: ")
    assert kept == ("x" * shift + char * 1000)[: len(kept)]  # a prefix of whole characters, no U+FFFD
    assert note.startswith(f"{len(data)} bytes written, the first {len(kept.encode())} kept]")
    assert cut_output(b"short", 5, limit=300) == "short"


async def test_a_stopped_worker_leaves_no_claim_behind(server: str, workers: Workers, binaries: Binaries) -> None:
    proc = workers.start("leaver", "--concurrency", "2")
    async with ExecutrClient(server) as client:
        await appears_in_log(workers, "leaver", "serving")
        await asyncio.sleep(0.5)  # its long polls are open (nothing says when they reach the server)
        proc.send_signal(signal.SIGTERM)
        assert await exits(proc, 20) == 0
        job_id = (await client.submit(binaries.job("hello.sh", "after")))["id"]
        await asyncio.sleep(1.0)  # the orphaned long poll would have claimed it by now
        assert (await client.get(job_id))["status"] == "pending"


async def appears_in_log(workers: Workers, worker_id: str, text: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if text in workers.log(worker_id):
                return
            await asyncio.sleep(0.02)


async def test_a_second_signal_stops_running_jobs_without_waiting_for_the_grace(
        server: str, workers: Workers, binaries: Binaries, marks: Path) -> None:
    proc = workers.start("w1", "--grace", "300")
    async with ExecutrClient(server) as client:
        job_id = (await client.submit(binaries.job("sleeper.sh", "s", "60", env={"MARKS": str(marks)})))["id"]
        await appears(marks / "started-s")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        await appears_in_log(workers, "w1", "stopping")
        proc.send_signal(signal.SIGINT)
        assert await exits(proc, 20) == 0
        job = await client.get(job_id)
    assert job["status"] == "failed" and "worker stopped" in job.get("error_message", "")

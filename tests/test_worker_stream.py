"""`stepflow worker` sends a running job's output as it is printed (POST /api/v1/jobs/{id}/output): its
lines show in the Monitor API, its WebSocket and `stepflow logs` while it runs, its markers become
steps as they come, and nothing is stored twice when the job ends. Also: a wrong method on a fixed
path is 405, a worker killed with -9 has its job folder removed by the next worker to start, and the
binary cache never evicts what a job is about to run. Real `stepflow serve`, real worker processes,
binaries served by a real HTTP server (the fixtures of tests/test_worker.py)."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api_compat.executr.binary_cache import BinaryCache
from api_compat.executr.client import ExecutrClient
from api_compat.executr.job_dirs import LOCK_NAME, JobDir, sweep
from tests import test_worker as base
from tests.test_worker import ROOT, Binaries, Workers, stop

# the fixtures of tests/test_worker.py, taken as they are
server = base.server
workers = base.workers
binaries = base.binaries
marks = base.marks
finished, appears, appears_in_log = base.finished, base.appears, base.appears_in_log

#: prints, then waits for the test to say go ($MARKS/go-$1, then $MARKS/end-$1) before printing more
STAGED = ('#!/bin/sh\necho "STEP_START:prepare"\necho "first line"\necho "to stderr" >&2\n'
          'while [ ! -e "$MARKS/go-$1" ]; do sleep 0.02; done\n'
          'echo "STEP_COMPLETE:prepare"\necho "STEP_START:build"\necho "second line"\n'
          'while [ ! -e "$MARKS/end-$1" ]; do sleep 0.02; done\necho "last line"\n')
#: 1.5 MiB in lines of 1000 bytes, then waits for the go: past the report's 1 MiB while it runs
WIDE = ('#!/bin/sh\npython3 -c "import sys\nfor i in range(1536): sys.stdout.write(\'%04d\' % i + \'x\' * 995 + '
        '\'\\\\n\')"\nwhile [ ! -e "$MARKS/go-$1" ]; do sleep 0.02; done\necho "after the wait"\n')


#: first run: a step and a line, then a long wait (its worker is killed); a later attempt ends at once
LOUD_ONCE = ('#!/bin/sh\nif mkdir "$MARKS/lock-$1" 2>/dev/null; then\n  echo $$ > "$MARKS/lock-$1/pid"\n'
             '  echo "STEP_START:first try"\n  echo "first attempt"\n  sleep 60\nfi\necho "second run"\n')


@pytest.fixture
def staged(binaries: Binaries) -> Binaries:
    (binaries.folder / "staged.sh").write_text(STAGED)
    (binaries.folder / "loud-once.sh").write_text(LOUD_ONCE)
    (binaries.folder / "wide.sh").write_text(WIDE)
    return binaries


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """`check()`'s first truthy answer (polled: the REST API has no event to await)."""
    async with asyncio.timeout(timeout):
        for _ in itertools.count():
            if answer := await check():
                return answer
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def monitor(http: aiohttp.ClientSession, url: str, path: str) -> Any:
    async with http.get(f"{url}{path}") as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["data"]


async def ended(http: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    """The job's execution once it has ended (the executr API says so a moment before: its queue
    item ends first)."""
    async def check() -> dict[str, Any] | None:
        detail = await monitor(http, url, f"/api/executions/{job_id}")
        execution = detail["execution"]
        return execution if execution["status"] in base.FINISHED else None
    return dict(await until(check))


async def lines_of(http: aiohttp.ClientSession, url: str, job_id: str) -> list[dict[str, Any]]:
    return list((await monitor(http, url, f"/api/executions/{job_id}/logs?limit=10000"))["lines"])


async def steps_of(http: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, str]:
    detail = await monitor(http, url, f"/api/executions/{job_id}")
    return {s["name"]: s["status"] for s in detail.get("steps") or []}


def stepflow_logs(tmp_path: Path, job_id: str) -> str:
    """`stepflow logs ID` on the server's data folder (it reads the store, as a user would)."""
    done = subprocess.run([sys.executable, "-m", "stepflow.main", "logs", job_id],
                          env=base._env(tmp_path / "serve-data"), cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_running_jobs_lines_and_marker_steps_show_before_it_ends(
        tmp_path: Path, server: str, workers: Workers, staged: Binaries, marks: Path) -> None:
    workers.start("w1")
    async with ExecutrClient(server) as client, aiohttp.ClientSession() as http:
        job_id = (await client.submit(staged.job("staged.sh", "a", env={"MARKS": str(marks)})))["id"]
        async with http.ws_connect(f"{server.replace('http', 'ws', 1)}/ws") as ws:
            await ws.send_json({"type": "subscribe", "data": {"execution_id": job_id}})
            entry = await _first_log_entry(ws, "first line")
        assert "first line" in json.dumps(entry)
        assert (await client.get(job_id))["status"] == "running"
        # the Monitor API and `stepflow logs` have it too, while the job still runs
        texts = [line["content"] for line in await until(lambda: _with(http, server, job_id, "first line"))]
        assert "to stderr" in texts or await until(lambda: _with(http, server, job_id, "to stderr"))
        assert "first line" in await asyncio.to_thread(stepflow_logs, tmp_path, job_id)
        assert (await until(lambda: _step(http, server, job_id, "prepare", "running"))) is True
        assert (await client.get(job_id))["status"] == "running"
        # the next marker closes the first step and opens another, live
        (marks / "go-a").touch()
        await until(lambda: _with(http, server, job_id, "second line"))
        await until(lambda: _step(http, server, job_id, "build", "running"))
        steps = await steps_of(http, server, job_id)
        assert steps["prepare"] == "completed"
        assert (await client.get(job_id))["status"] == "running"
        (marks / "end-a").touch()
        job = await finished(client, job_id)
        assert (await ended(http, server, job_id))["status"] == "completed"
        assert (await steps_of(http, server, job_id))["build"] == "completed"
        lines = await lines_of(http, server, job_id)
    assert job["status"] == "completed", job
    # the executr API answers the output as before: all of it, from the report
    assert job["stdout"] == ("STEP_START:prepare\nfirst line\nSTEP_COMPLETE:prepare\nSTEP_START:build\n"
                             "second line\nlast line\n")
    assert job["stderr"] == "to stderr\n"
    # each line once: what streamed is not stored again at the end
    printed = [line["content"] for line in lines if line["stream"] in ("stdout", "stderr")]
    assert sorted(printed) == sorted(job["stdout"].splitlines() + ["to stderr"])
    assert [line["seq"] for line in lines] == sorted({line["seq"] for line in lines})
    assert "live output stopped" not in workers.log("w1")


async def _first_log_entry(ws: aiohttp.ClientWebSocketResponse, text: str) -> dict[str, Any]:
    async with asyncio.timeout(30):
        async for message in ws:
            data = json.loads(message.data)
            if data.get("type") == "log_entry" and text in json.dumps(data):
                return dict(data)
    raise AssertionError("the socket closed before the line came")


async def _with(http: aiohttp.ClientSession, url: str, job_id: str, text: str) -> list[dict[str, Any]] | None:
    lines = await lines_of(http, url, job_id)
    return lines if any(line["content"] == text for line in lines) else None


async def _step(http: aiohttp.ClientSession, url: str, job_id: str, name: str, status: str) -> bool:
    return (await steps_of(http, url, job_id)).get(name) == status


async def test_a_streamed_attempt_whose_worker_died_keeps_its_lines_and_the_next_attempt_adds_its_own(
        server: str, workers: Workers, staged: Binaries, marks: Path) -> None:
    doomed = workers.start("doomed")
    async with ExecutrClient(server) as client, aiohttp.ClientSession() as http:
        job_id = (await client.submit(staged.job("loud-once.sh", "k", env={"MARKS": str(marks)})))["id"]
        await until(lambda: _with(http, server, job_id, "first attempt"))
        assert (await steps_of(http, server, job_id))["first try"] == "running"
        doomed.kill()
        doomed.wait()
        workers.start("survivor")
        job = await finished(client, job_id, timeout=base.HEARTBEAT_TIMEOUT + 30)
        await ended(http, server, job_id)
        lines = await lines_of(http, server, job_id)
        steps = await steps_of(http, server, job_id)
    assert job["status"] == "completed" and job["executor_id"] == "survivor", job
    assert job["stdout"] == "second run\n"  # the report of the attempt that completed
    assert [line["content"] for line in lines if line["stream"] == "stdout"] == [
        "STEP_START:first try", "first attempt", "second run"]
    assert steps["first try"] == "failed"  # open when its attempt timed out
    assert any("no heartbeat from doomed" in line["content"] for line in lines if line["stream"] == "system")


async def test_output_past_1_mib_streams_whole_and_the_report_stays_cut(
        server: str, workers: Workers, staged: Binaries, marks: Path) -> None:
    workers.start("w1")
    async with ExecutrClient(server) as client, aiohttp.ClientSession() as http:
        job_id = (await client.submit(staged.job("wide.sh", "w", env={"MARKS": str(marks)})))["id"]
        # all 1.5 MiB arrive while it runs, though the report will keep 1 MiB
        await until(lambda: _with(http, server, job_id, "1535" + "x" * 995), timeout=60)
        assert (await client.get(job_id))["status"] == "running"
        (marks / "go-w").touch()
        job = await finished(client, job_id)
        await ended(http, server, job_id)
        lines = await lines_of(http, server, job_id)
    assert job["status"] == "completed", {k: v for k, v in job.items() if k not in ("stdout", "stderr")}
    assert len(job["stdout"].encode()) <= base.OUTPUT_LIMIT and "output truncated" in job["stdout"][-200:]
    printed = [line["content"] for line in lines if line["stream"] == "stdout"]
    assert printed == [f"{i:04d}" + "x" * 995 for i in range(1536)] + ["after the wait"]


async def test_a_worker_told_not_to_stream_sends_it_all_at_the_end(
        server: str, workers: Workers, staged: Binaries, marks: Path) -> None:
    """As the reference executor does (and as a worker does against a server without the route)."""
    workers.start("quiet", "--no-stream")
    async with ExecutrClient(server) as client, aiohttp.ClientSession() as http:
        job_id = (await client.submit(staged.job("staged.sh", "q", env={"MARKS": str(marks)})))["id"]
        await appears_in_log(workers, "quiet", "claimed job")
        (marks / "go-q").touch()
        (marks / "end-q").touch()
        job = await finished(client, job_id)
        await ended(http, server, job_id)
        lines = await lines_of(http, server, job_id)
        steps = await steps_of(http, server, job_id)
    assert job["status"] == "completed"
    assert [line["content"] for line in lines if line["stream"] == "stdout"] == job["stdout"].splitlines()
    assert steps["prepare"] == "completed" and steps["build"] == "completed"


async def test_output_from_an_executor_that_does_not_hold_the_job_is_refused(
        server: str, workers: Workers, staged: Binaries, marks: Path) -> None:
    workers.start("owner")
    async with ExecutrClient(server) as client, aiohttp.ClientSession() as http:
        job_id = (await client.submit(staged.job("staged.sh", "o", env={"MARKS": str(marks)})))["id"]
        await until(lambda: _with(http, server, job_id, "first line"))
        body = {"executor_id": "intruder", "chunks": [{"stream": "stdout", "offset": 0, "text": "forged\n"}]}
        async with http.post(f"{server}/api/v1/jobs/{job_id}/output", json=body) as resp:
            assert resp.status == 409
            assert "owner" in (await resp.json())["error"]
        async with http.post(f"{server}/api/v1/jobs/{'0' * 8}-0000-4000-8000-{'0' * 12}/output", json=body) as resp:
            assert resp.status == 404 and "error" in await resp.json()
        (marks / "go-o").touch()
        (marks / "end-o").touch()
        await finished(client, job_id)
        await ended(http, server, job_id)
        lines = await lines_of(http, server, job_id)
    assert "forged" not in [line["content"] for line in lines]


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `stepflow serve` for the tests of this module that only ask about its routes (no job is
    ever submitted to it); its base URL."""
    with base.serving(tmp_path_factory.mktemp("idle-serve") / "serve-data") as url:
        yield url


async def test_the_output_route_is_in_the_openapi_document(idle_server: str) -> None:
    server = idle_server
    async with aiohttp.ClientSession() as http, http.get(f"{server}/api/openapi.json") as resp:
        document = await resp.json()
    operation = document["paths"]["/api/v1/jobs/{job_id}/output"]["post"]
    assert "204" in operation["responses"] and "409" in operation["responses"]


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/jobs/claim"), ("DELETE", "/jobs/claim"), ("PUT", "/jobs/claim"), ("GET", "/jobs/bulk"),
    ("DELETE", "/jobs/bulk"), ("GET", "/jobs/bulk/cancel"), ("PATCH", "/jobs"),
    ("POST", "/jobs/{id}"), ("GET", "/jobs/{id}/heartbeat"), ("GET", "/jobs/{id}/output"),
    ("POST", "/admin/stats"), ("POST", "/health"),
])
async def test_a_wrong_method_is_405_in_executrs_error_body(idle_server: str, method: str, path: str) -> None:
    server = idle_server
    job_id = "0" * 8 + "-0000-4000-8000-" + "0" * 12
    async with aiohttp.ClientSession() as http, \
            http.request(method, f"{server}/api/v1{path.replace('{id}', job_id)}") as resp:
        assert resp.status == 405, await resp.text()
        body = await resp.json()
        assert resp.headers.get("Allow")
    assert isinstance(body["error"], str) and body["error"]


# -- job folders and the binary cache ---------------------------------------------------------------------
async def test_the_folder_of_a_job_whose_worker_was_killed_is_removed_by_the_next_worker(
        tmp_path: Path, server: str, workers: Workers, binaries: Binaries, marks: Path) -> None:
    work = tmp_path / "shared-work"
    doomed = workers.start("doomed", "--work-dir", str(work))
    async with ExecutrClient(server) as client:
        await client.submit(binaries.job("slow-once.sh", "d", env={"MARKS": str(marks)}))
        await appears(marks / "started-d")
        (dead_folder,) = work.iterdir()
        # a short grace: the teardown stops this worker while its job sleeps (30 s by default; 15 s of
        # them waited before the kill)
        workers.start("live", "--work-dir", str(work), "--grace", "0.5")
        await client.submit(binaries.job("sleeper.sh", "l", "60", env={"MARKS": str(marks)}))
        await appears(marks / "started-l")
        (live_folder,) = (p for p in work.iterdir() if p != dead_folder)
        doomed.kill()  # -9: it removes nothing
        doomed.wait()
        assert dead_folder.exists()
        workers.start("next", "--work-dir", str(work))
        await appears_in_log(workers, "next", "serving")
    assert not dead_folder.exists()
    assert live_folder.exists() and (live_folder / LOCK_NAME).exists()  # the live worker's job goes on
    assert f"removed {dead_folder}" in workers.log("next")


def test_a_sweep_removes_unlocked_folders_only(tmp_path: Path) -> None:
    held = JobDir(tmp_path, "held")
    (held.work / "output.txt").write_text("mine")
    left = tmp_path / "left-abc"
    (left / "work").mkdir(parents=True)
    (left / LOCK_NAME).write_text("12345\n")  # its worker died: nobody holds the lock
    # another process holds this one (as another worker on the host would)
    other = tmp_path / "other-xyz"
    other.mkdir()
    (other / LOCK_NAME).write_text("")
    locker = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               f"f = open({str(other / LOCK_NAME)!r}, 'r+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                               "print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        assert sweep(tmp_path) == [left]
        assert held.path.exists() and other.exists() and not left.exists()
    finally:
        locker.send_signal(signal.SIGKILL)
        locker.wait()
    assert sweep(tmp_path) == [other]
    held.remove()
    assert not held.path.exists()


async def test_eviction_never_removes_a_binary_a_job_is_about_to_run(tmp_path: Path) -> None:
    """Two caches on one folder, as two workers on one host: the second's downloads push the cache
    past its bound while the first's job has placed its binary and not yet started it."""
    sources = tmp_path / "src"
    sources.mkdir()
    blobs = {}
    for name in ("a", "b", "c"):
        path = sources / name
        path.write_bytes(b"#!/bin/sh\necho " + name.encode() + b"\n" + b"#" * 4000 + b"\n")
        blobs[name] = (path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest())
    folder = tmp_path / "cache"
    first, second = BinaryCache(folder, 5000, 10), BinaryCache(folder, 5000, 10)
    try:
        job_dir = JobDir(tmp_path, "job")
        placed = job_dir.binary("a")
        await first.place(*blobs["a"], placed)
        # the other worker's downloads: over the bound, and "a" is the least recently used
        os.utime(folder / blobs["a"][1], (1, 1))
        await second.get(*blobs["b"])
        await second.get(*blobs["c"])
        assert (folder / blobs["a"][1]).exists(), "evicted though a job's folder holds it"
        job_dir.remove()  # the job ended: its link is gone, the cache may drop it now
        await second.get(*blobs["b"])
        assert not (folder / blobs["a"][1]).exists()
        # a binary the cache dropped is fetched again when a job needs it, and runs from its folder
        other_dir = JobDir(tmp_path, "job2")
        await first.place(*blobs["a"], other_dir.binary("a"))
        done = await asyncio.to_thread(subprocess.run, [str(other_dir.binary("a"))], capture_output=True,
                                       text=True, check=True)
        assert done.stdout == "a\n"
        other_dir.remove()
    finally:
        await first.close()
        await second.close()


def test_a_job_folders_lock_is_held_while_it_exists(tmp_path: Path) -> None:
    job_dir = JobDir(tmp_path, "j")
    fd = os.open(job_dir.path / LOCK_NAME, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert (job_dir.path / LOCK_NAME).read_text().strip() == str(os.getpid())
    finally:
        os.close(fd)
        job_dir.remove()


# -- a server whose output route is missing or failing ------------------------------------------------------
class Proxy:
    """A real HTTP proxy in front of `stepflow serve`: everything passes, but the output route answers
    as `output` says: "pass", "missing" (the reference executr's plain `404 page not found`) or "fail"
    (500)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.output = "pass"
        self.outputs_seen = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Proxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._http = aiohttp.ClientSession(auto_decompress=False)
        # a worker that stops drops its long-poll claim: so does the proxy, upstream (as a real proxy
        # does), instead of holding the claim to its end (up to 20 s) before it can close
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._http is not None
        await self._runner.cleanup()
        await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        if request.path.endswith("/output"):
            self.outputs_seen += 1
            if self.output == "missing":
                return web.Response(status=404, text="404 page not found\n")
            if self.output == "fail":
                return web.json_response({"error": "the disk is on fire"}, status=500)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._http.request(request.method, f"{self.upstream}{request.path_qs}", data=body,
                                      headers=headers) as resp:
            data = await resp.read()
            return web.Response(status=resp.status, body=data,
                                        headers={k: v for k, v in resp.headers.items()
                                                 if k.lower() in ("content-type", "allow")})


async def test_a_server_without_the_output_route_gets_the_output_at_the_end_silently(
        tmp_path: Path, server: str, staged: Binaries, marks: Path) -> None:
    async with Proxy(server) as proxy, ExecutrClient(server) as client, aiohttp.ClientSession() as http:
        proxy.output = "missing"
        crew = Workers(tmp_path, proxy.url)
        try:
            crew.start("old")
            job_id = (await client.submit(staged.job("staged.sh", "m", env={"MARKS": str(marks)})))["id"]
            await until(lambda: _seen(proxy))
            (marks / "go-m").touch()
            (marks / "end-m").touch()
            job = await finished(client, job_id)
            await ended(http, server, job_id)
            lines = await lines_of(http, server, job_id)
            # a second job: the worker asks no more
            seen = proxy.outputs_seen
            second = (await client.submit(staged.job("staged.sh", "n", env={"MARKS": str(marks)})))["id"]
            (marks / "go-n").touch()
            (marks / "end-n").touch()
            assert (await finished(client, second))["status"] == "completed"
        finally:
            crew.stop_all()
    assert job["status"] == "completed"
    assert [line["content"] for line in lines if line["stream"] == "stdout"] == job["stdout"].splitlines()
    assert proxy.outputs_seen == seen
    assert "live output" not in crew.log("old")


async def _seen(proxy: Proxy) -> bool:
    return proxy.outputs_seen > 0


async def test_a_failing_stream_drops_to_the_result_and_nothing_is_stored_twice(
        tmp_path: Path, server: str, staged: Binaries, marks: Path) -> None:
    async with Proxy(server) as proxy, ExecutrClient(server) as client, aiohttp.ClientSession() as http:
        crew = Workers(tmp_path, proxy.url)
        try:
            crew.start("flaky")
            job_id = (await client.submit(staged.job("staged.sh", "f", env={"MARKS": str(marks)})))["id"]
            await until(lambda: _with(http, server, job_id, "first line"))  # streamed
            proxy.output = "fail"
            (marks / "go-f").touch()
            await appears_in_log(crew, "flaky", "live output stopped")
            assert (await client.get(job_id))["status"] == "running"  # the job goes on
            (marks / "end-f").touch()
            job = await finished(client, job_id)
            assert (await ended(http, server, job_id))["status"] == "completed"
            lines = await lines_of(http, server, job_id)
            steps = await steps_of(http, server, job_id)
        finally:
            crew.stop_all()
    assert job["status"] == "completed"
    # the first lines came live, the rest with the result: each once, in order
    assert [line["content"] for line in lines if line["stream"] == "stdout"] == job["stdout"].splitlines()
    assert [line["content"] for line in lines if line["stream"] == "stderr"] == ["to stderr"]
    assert steps == {"prepare": "completed", "build": "completed"}
    assert "500" in crew.log("flaky")


def _serve(data: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stepflow.main", "serve", "--port", str(port), "--ws-port", "0"],
        env=base._env(data, **{base.HEARTBEAT_TIMEOUT_ENV: "30"}), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, ""):
        if "serving http://" in line:
            break
    else:
        raise AssertionError("stepflow serve did not start")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc


async def test_output_streamed_across_a_restart_of_the_server_is_stored_once(
        tmp_path: Path, staged: Binaries, marks: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "restart-data"
    serve = await asyncio.to_thread(_serve, data, port)
    crew = Workers(tmp_path, url)
    try:
        crew.start("steady")
        async with ExecutrClient(url) as client, aiohttp.ClientSession() as http:
            job_id = (await client.submit(staged.job("staged.sh", "r", env={"MARKS": str(marks)})))["id"]
            await until(lambda: _with(http, url, job_id, "first line"))
        await asyncio.to_thread(stop, serve)
        serve = await asyncio.to_thread(_serve, data, port)
        async with ExecutrClient(url) as client, aiohttp.ClientSession() as http:
            (marks / "go-r").touch()  # streamed to the new server
            await until(lambda: _with(http, url, job_id, "second line"))
            assert (await client.get(job_id))["status"] == "running"
            (marks / "end-r").touch()
            job = await finished(client, job_id)
            await ended(http, url, job_id)
            lines = await lines_of(http, url, job_id)
            steps = await steps_of(http, url, job_id)
    finally:
        crew.stop_all()
        await asyncio.to_thread(stop, serve)
    assert job["status"] == "completed", job
    assert [line["content"] for line in lines if line["stream"] == "stdout"] == job["stdout"].splitlines()
    assert steps["build"] == "completed"
    # the step open when the server stopped: its pump went with the server (a line says so)
    assert steps["prepare"] == "cancelled"
    assert any("server restarted" in line["content"] for line in lines if line["stream"] == "system")
    assert "live output stopped" not in crew.log("steady")

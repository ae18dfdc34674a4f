"""Commands do not outlive a killed engine: its watchdog stops them, and when it could not, the next
start (or `stepflow ls`) stops what lost executions left running, never a process without their tag.

A real `stepflow` process, kill -9, real step processes found through /proc."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from engine.runners.orphans import TAG_VARIABLE, WATCHDOG_VARIABLE, supported

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not supported(), reason="needs /proc")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stepflow.main", *args]


def environment(data: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STEPFLOW_STORAGE_PATH": str(data), **extra}


def alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever adopted it has ended)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.02)


def read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def watchdogs_of(data: Path) -> list[int]:
    """The watchdog processes of engines run on `data` (they inherit its STEPFLOW_STORAGE_PATH)."""
    found = []
    for process in psutil.process_iter(["cmdline", "environ"]):
        cmdline = process.info["cmdline"] or []
        environ = process.info["environ"] or {}
        if any(part.endswith("orphans.py") for part in cmdline) and environ.get("STEPFLOW_STORAGE_PATH") == str(data):
            found.append(process.pid)
    return found


@contextlib.contextmanager
def cleaned_up(*pid_files: Path, extra: list[int] | None = None) -> Iterator[None]:
    """Whatever happens in the test, none of its processes stays behind."""
    try:
        yield
    finally:
        for pid in [p for f in pid_files for p in read_pids(f)] + (extra or []):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def engine_process(data: Path, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    """`stepflow ARGS` on `data`, in the background, its output dropped."""
    return subprocess.Popen(cli(*args), env=environment(data, **extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


@contextlib.contextmanager
def killed_after(engine: subprocess.Popen[bytes]) -> Iterator[None]:
    """Kill the engine with SIGKILL (no clean-up of its own) once the block is done, however it ends."""
    try:
        yield
    finally:
        engine.kill()
        engine.wait()


def wait_all_gone(pids: list[int]) -> None:
    wait_until(lambda: not any(alive(pid) for pid in pids), 15,
               f"processes of the killed engine's steps still run: {[p for p in pids if alive(p)]}")


#: a step that starts two children (one ignoring SIGTERM), writes their pids and its own, and waits
STEP = ("trap '' TERM; sleep 300 & echo $! >> {pids}; (trap '' TERM; exec sleep 301) & echo $! >> {pids}; "
        "echo $$ >> {pids}; wait")


def test_killing_the_engine_kills_the_processes_of_its_running_steps(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(
        "name: parallel\nsteps:\n"
        + "".join(f"  - name: s{i}\n    run: {json.dumps(STEP.format(pids=pids))}\n" for i in range(3))
    )
    engine = engine_process(tmp_path / "data", "run", "--plain", str(workflow))
    with cleaned_up(pids):
        with killed_after(engine):
            wait_until(lambda: len(read_pids(pids)) == 9, 30, "the three steps did not start their children")
        wait_all_gone(read_pids(pids))
        # and the watchdog, its work done, is gone too
        wait_until(lambda: not watchdogs_of(tmp_path / "data"), 15, "the watchdog did not exit")


def test_a_clean_exit_leaves_no_watchdog_behind(tmp_path: Path) -> None:
    result = subprocess.run(cli("exec", "--", "true"), env=environment(tmp_path / "data"),
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: not watchdogs_of(tmp_path / "data"), 15, "the watchdog did not exit")


@pytest.mark.parametrize("then", [("ls",), ("exec", "--", "true")], ids=["ls", "engine start"])
def test_what_a_lost_execution_left_running_is_stopped_at_the_next_start(tmp_path: Path, then: tuple[str, ...]) -> None:
    pids = tmp_path / "pids"
    data = tmp_path / "data"
    # no watchdog: as when it was killed along with the engine
    engine = engine_process(data, "exec", "--plain", "--shell", "--", STEP.format(pids=pids),
                            **{WATCHDOG_VARIABLE: "0"})
    bystanders = [
        # no tag
        subprocess.Popen(["sleep", "300"], env={k: v for k, v in os.environ.items() if k != TAG_VARIABLE}),
        # the tag of an execution that is not lost
        subprocess.Popen(["sleep", "300"], env={**os.environ, TAG_VARIABLE: f"{uuid.uuid4()}.{os.urandom(16).hex()}"}),
    ]
    with cleaned_up(pids, extra=[p.pid for p in bystanders]):
        with killed_after(engine):
            wait_until(lambda: len(read_pids(pids)) == 3, 30, "the step did not start its children")
        orphans = read_pids(pids)
        assert all(alive(pid) for pid in orphans), "without a watchdog they outlive the engine"

        result = subprocess.run(cli(*then), env=environment(data), capture_output=True, text=True,
                                timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        # stopped before the command went on (SIGTERM is ignored: SIGKILL after the grace)
        assert [pid for pid in orphans if alive(pid)] == []
        assert all(alive(p.pid) for p in bystanders)
        assert "stopped 3 process(es) left running by lost execution(s)" in result.stderr
        listed = subprocess.run(cli("ls", "--json"), env=environment(data), capture_output=True, text=True,
                                timeout=60, cwd=ROOT)
        lost = [e for e in json.loads(listed.stdout) if e["abort_reason"] == "engine lost"]
        assert len(lost) == 1 and lost[0]["status"] == "failed"
    for process in bystanders:
        process.wait()


def test_a_watchdog_that_died_is_replaced_and_told_every_running_command(tmp_path: Path) -> None:
    pids, gate = tmp_path / "pids", tmp_path / "gate"
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(
        "name: w\nsteps:\n"
        f"  - {{name: early, run: {json.dumps(STEP.format(pids=pids))}}}\n"
        f"  - {{name: gate, run: {json.dumps(f'while [ ! -e {gate} ]; do sleep 0.02; done')}}}\n"
        f"  - {{name: late, run: {json.dumps(STEP.format(pids=pids))}, needs: [gate]}}\n"
    )
    data = tmp_path / "data"
    engine = engine_process(data, "run", "--plain", str(workflow))
    with cleaned_up(pids):
        with killed_after(engine):
            wait_until(lambda: len(read_pids(pids)) == 3 and len(watchdogs_of(data)) == 1, 30,
                       "the first step did not start its children")
            [first] = watchdogs_of(data)
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: not alive(first), 10, "the watchdog did not die")
            gate.touch()  # the gate step ends: the engine's next message finds the watchdog gone
            wait_until(lambda: len(read_pids(pids)) == 6, 30, "the last step did not start its children")
            assert len(watchdogs_of(data)) == 1 and watchdogs_of(data) != [first]
        wait_all_gone(read_pids(pids))

"""`stepflow ... | head`: a reader that leaves early stops the printing, never the work."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_cli import ROOT, ls_json, read_until, stepflow


def spawn_piped(data: Path, *args: str) -> subprocess.Popen:
    """`stepflow ARGS | reader`: stdout is a pipe this test reads and then closes, as `head` does."""
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "stepflow.main", *args],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def open_gate(gate: Path) -> None:
    """Let the command past `read < gate`: opening a FIFO for writing waits for its reader."""
    with open(gate, "w") as fifo:
        fifo.write("go\n")


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    assert proc.stderr is not None
    try:
        stderr = proc.stderr.read()
        return proc.wait(timeout=60), stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("last_exit", "status", "code"), [(0, "completed", 0), (3, "failed", 1)])
def test_run_whose_reader_leaves_goes_on_to_its_end_and_exits_with_its_code(
        tmp_path: Path, last_exit: int, status: str, code: int) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(textwrap.dedent(f"""\
        name: piped
        steps:
          - name: first
            run: echo one; read -r _ < {gate}; echo STEP_START:inner; echo two; echo STEP_COMPLETE:inner
          - name: second
            needs: [first]
            run: echo three; exit {last_exit}
        """))
    data = tmp_path / "data"
    proc = spawn_piped(data, "run", "--plain", str(workflow))
    read_until(proc, "first started")
    assert proc.stdout is not None
    proc.stdout.close()  # `| head -2` has read its lines and gone
    open_gate(gate)  # only now does the workflow go on and have more to print
    returncode, stderr = finish(proc)
    [execution] = ls_json(data)
    assert execution["status"] == status, execution
    assert execution["abort_reason"] is None
    assert execution["completed_steps"] == (3 if last_exit == 0 else 2)
    assert returncode == code
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_exec_whose_reader_leaves_runs_the_command_to_its_end(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    data = tmp_path / "data"
    proc = spawn_piped(data, "exec", "--plain", "-v", "--shell", "--",
                       f"echo STEP_START:one; echo ready; read -r _ < {gate}; "
                       "for i in $(seq 1 2000); do echo line $i; done; echo STEP_COMPLETE:one; exit 4")
    read_until(proc, "ready")
    assert proc.stdout is not None
    proc.stdout.close()
    open_gate(gate)
    returncode, stderr = finish(proc)
    [execution] = ls_json(data)
    assert (execution["status"], execution["exit_code"]) == ("failed", 4)
    assert returncode == 4  # exec exits with its command's code
    assert "Traceback" not in stderr, stderr
    # the lines printed after the reader left are all stored
    logs = stepflow(data, "logs", execution["id"])
    assert logs.stdout.splitlines()[-2:] == ["line 2000", "STEP_COMPLETE:one"]


@pytest.mark.parametrize("command", [("ls",), ("show", "ID"), ("logs", "ID"), ("logs", "-f", "ID"),
                                     ("ls", "--json"), ("show", "--json", "ID")])
def test_read_commands_whose_reader_left_exit_quietly(tmp_path: Path, command: tuple[str, ...]) -> None:
    data = tmp_path / "data"
    for _ in range(2):
        assert stepflow(data, "exec", "--", "seq", "1", "20000").returncode == 0
    execution_id = ls_json(data)[0]["id"]
    proc = spawn_piped(data, *(execution_id if arg == "ID" else arg for arg in command))
    assert proc.stdout is not None
    proc.stdout.close()  # gone before the first line: every write meets a closed pipe
    returncode, stderr = finish(proc)
    assert (returncode, stderr) == (0, "")


def test_logs_follow_whose_reader_leaves_mid_run_exits_quietly(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    data = tmp_path / "data"
    runner = spawn_piped(data, "exec", "--plain", "-v", "--shell", "--",
                         f"echo ready; read -r _ < {gate}; seq 1 5000")
    follower = None
    try:
        read_until(runner, "ready")
        execution_id = ls_json(data)[0]["id"]
        follower = spawn_piped(data, "logs", "-f", execution_id)
        read_until(follower, "ready")
        assert follower.stdout is not None
        follower.stdout.close()
        open_gate(gate)
        returncode, stderr = finish(follower)
        assert (returncode, stderr) == (0, "")
        assert finish(runner)[0] == 0
    finally:
        for proc in (runner, follower):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

"""`stepflow ls`: whole ids and statuses, piped or on an 80-column terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

from tests.test_cli import ROOT, ls_json, stepflow

LONG_NAME = "a rather long execution name that goes on and on and on for quite a while, really"


def make_history(data: Path) -> list[dict]:
    assert stepflow(data, "exec", "--name", LONG_NAME, "--", "true").returncode == 0
    assert stepflow(data, "exec", "--", "false").returncode == 1
    return ls_json(data)


def in_terminal(data: Path, *args: str, columns: int = 80) -> str:
    """What `stepflow ARGS` shows on a terminal `columns` wide (a real pseudo-terminal)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES", "NO_COLOR")}
    env.update(STEPFLOW_STORAGE_PATH=str(data), TERM="xterm-256color")
    proc = subprocess.Popen([sys.executable, "-m", "stepflow.main", *args], env=env, cwd=ROOT,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = b"".join(chunks).decode()
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", text).replace("\r\n", "\n")


def test_piped_ls_prints_whole_ids_names_and_statuses(tmp_path: Path) -> None:
    executions = make_history(tmp_path)
    env_80 = {"COLUMNS": "80"}
    for env in ({}, env_80):
        result = subprocess.run([sys.executable, "-m", "stepflow.main", "ls"], cwd=ROOT, capture_output=True,
                                text=True, env={**os.environ, **env, "STEPFLOW_STORAGE_PATH": str(tmp_path)})
        assert result.returncode == 0, result.stderr
        rows = result.stdout.splitlines()[1:]
        assert len(rows) == 2
        for row, execution in zip(rows, executions, strict=True):
            assert execution["id"] in row.split(), row
            assert execution["status"] in row.split(), row
            assert execution["name"] in row, row
            assert "…" not in row


def test_ls_json_keeps_its_shape(tmp_path: Path) -> None:
    executions = make_history(tmp_path)
    assert [e["name"] for e in executions] == ["false", LONG_NAME]
    assert all(len(e["id"]) == 36 for e in executions)


def test_ls_on_an_80_column_terminal_shrinks_the_name_not_the_ids_nor_the_statuses(tmp_path: Path) -> None:
    executions = make_history(tmp_path)
    screen = in_terminal(tmp_path, "ls", columns=80)
    lines = [line for line in screen.splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), screen
    header, *rows = lines
    assert "status" in header and "duration" in header, screen
    assert len(rows) == 2, screen
    for row, execution in zip(rows, executions, strict=True):
        words = row.split()
        assert execution["id"][:8] in words, row
        assert execution["status"] in words, row
    long_row = rows[1]
    assert LONG_NAME[:20] in long_row and LONG_NAME not in long_row and "…" in long_row, long_row

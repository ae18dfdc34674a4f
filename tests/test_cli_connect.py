"""`stepflow tui --connect URL` goes through the composition root, which hands the TUI the StepFlow
Monitor API client (the TUI imports no API code): a server that does not answer is a one-line
error and exit code 1, before any screen is drawn."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def closed_port() -> int:
    return free_port()  # held, never listening, by this process: no other test worker takes it


def test_connecting_to_a_server_that_does_not_answer_says_so(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "stepflow.main", "tui", "--connect", url],
        env={**os.environ, "STEPFLOW_STORAGE_PATH": str(tmp_path)}, cwd=ROOT, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"stepflow: Cannot reach {url}"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "stepflow.db").exists()  # no local engine was opened

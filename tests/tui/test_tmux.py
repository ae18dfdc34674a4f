"""The finished program in tmux: `stepflow tui` on a fresh data directory, a sample workflow launched
with keys, the screen read with `capture-pane` until the steps show as completed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.samples import SAMPLES

ROOT = Path(__file__).resolve().parents[2]
STEPFLOW = Path(sys.executable).with_name("stepflow")

pytestmark = pytest.mark.slow


def tmux(*args: str, socket: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], check=True, capture_output=True, text=True).stdout


def capture(socket: str) -> str:
    return tmux("capture-pane", "-p", "-t", "tui", socket=socket)


def wait_screen(socket: str, predicate, timeout: float = 30.0, what: str = "screen") -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(socket)
        if predicate(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{screen}")


def wait_quit(socket: str, key: str, timeout: float = 10.0) -> None:
    """Wait for the program in session `tui` to end after `key` (tmux then drops the session)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "tui" not in subprocess.run(["tmux", "-L", socket, "ls"], capture_output=True, text=True).stdout:
            return
        time.sleep(0.2)
    raise AssertionError(f"stepflow did not quit on {key}:\n" + capture(socket))


@pytest.mark.parametrize("term", ["tmux-256color", "xterm-256color"])
def test_launch_a_sample_workflow_in_tmux(tmp_path: Path, term: str) -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing (scripts/setup-test-system.sh installs it)")
        pytest.skip("tmux is not installed")
    assert STEPFLOW.exists(), "the stepflow console script is not installed (pip install -e .)"
    socket = f"stepflow-test-{os.getpid()}-{term}"
    env = {
        "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"), "PATH": os.environ.get("PATH", ""),
        "TERM": term, "NO_COLOR": "1", "LANG": "C.UTF-8", "TZ": "UTC",
    }
    command = (f"{STEPFLOW} tui --no-api --data-dir {tmp_path / 'data'} {SAMPLES}")
    args = ["new-session", "-d", "-s", "tui", "-x", "80", "-y", "24"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    tmux(*args, "-c", str(ROOT), command, socket=socket)
    try:
        wait_screen(socket, lambda s: "Executions" in s, what="the list")
        tmux("send-keys", "-t", "tui", "n", socket=socket)
        screen = wait_screen(socket, lambda s: "build-and-test.yaml" in s, what="the launch dialog")
        lines = [ln for ln in screen.splitlines() if ".yaml" in ln]
        index = next(i for i, ln in enumerate(lines) if "build-and-test.yaml" in ln)
        for _ in range(index):
            tmux("send-keys", "-t", "tui", "Down", socket=socket)
        tmux("send-keys", "-t", "tui", "Enter", socket=socket)
        screen = wait_screen(socket, lambda s: "completed" in s.splitlines()[0], timeout=60,
                             what="the execution completed")
        for step in ("setup", "lint", "unit-tests", "package"):
            line = next(ln for ln in screen.splitlines() if f" {step}" in ln)
            assert "✓" in line, line
        # a key sent right after Escape would read as alt+key: wait for the list before the next one
        tmux("send-keys", "-t", "tui", "Escape", socket=socket)
        wait_screen(socket, lambda s: "Executions" in s.splitlines()[0]
                    and any(ln.startswith("✓") and "build-and-test" in ln for ln in s.splitlines()),
                    what="the list with the execution")
        tmux("send-keys", "-t", "tui", "q", socket=socket)
        wait_quit(socket, "q")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)

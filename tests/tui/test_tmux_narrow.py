"""The finished program in tmux at 80x24: the tree pane shows whole step names and durations, the
footer only whole keys (quit and help always), a notification leaves the log's last lines alone,
the list shows short ids, `c` is offered only while an execution runs, and ctrl+c quits as q does
(asking only while an execution of this engine runs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.samples import SAMPLES
from tests.tui.test_tmux import tmux, wait_quit, wait_screen

ROOT = Path(__file__).resolve().parents[2]
STEPFLOW = Path(sys.executable).with_name("stepflow")

pytestmark = pytest.mark.slow


def footer(screen: str) -> str:
    return screen.splitlines()[-1]


def test_80x24_tree_footer_notifications_ids_cancel_and_ctrl_c(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is missing (scripts/setup-test-system.sh installs it)")
        pytest.skip("tmux is not installed")
    socket = f"stepflow-narrow-{os.getpid()}"
    env = {
        "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"), "PATH": os.environ.get("PATH", ""),
        "TERM": "tmux-256color", "NO_COLOR": "1", "LANG": "C.UTF-8", "TZ": "UTC",
    }
    command = f"{STEPFLOW} tui --no-api --data-dir {tmp_path / 'data'} {SAMPLES}"
    args = ["new-session", "-d", "-s", "tui", "-x", "80", "-y", "24"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    tmux(*args, "-c", str(tmp_path), command, socket=socket)

    def keys(*names: str) -> None:
        tmux("send-keys", "-t", "tui", *names, socket=socket)

    try:
        wait_screen(socket, lambda s: "Executions" in s, what="the list")
        keys("n")
        screen = wait_screen(socket, lambda s: "build-and-test.yaml" in s, what="the launch dialog")
        lines = [ln for ln in screen.splitlines() if ".yaml" in ln]
        index = next(i for i, ln in enumerate(lines) if "build-and-test.yaml" in ln)
        for _ in range(index):
            keys("Down")
        keys("Enter")
        # the "Started" notification is at the top, the log's last rows stay readable
        screen = wait_screen(socket, lambda s: "Started build-and-test" in s, what="the notification")
        row = next(i for i, ln in enumerate(screen.splitlines()) if "Started build-and-test" in ln)
        assert row <= 4, screen
        screen = wait_screen(socket, lambda s: "completed" in s.splitlines()[0] and "c Cancel" not in footer(s),
                             timeout=60, what="the execution completed, c no longer offered")
        # whole names and durations in the tree pane
        for step in ("setup", "lint", "unit-tests", "package", "create-venv"):
            line = next(ln for ln in screen.splitlines() if f" {step} " in ln)
            tree_part = line.split("▕")[0]
            assert re.search(rf"✓ {step} \d+(\.\d)?m?s", tree_part), line
        # whole keys only; quit and help always there; nothing to cancel
        bottom = footer(screen)
        assert "q Quit" in bottom and "? Keys" in bottom, bottom
        assert "c Cancel" not in bottom
        short_id = screen.splitlines()[0].split()[-1]
        assert re.fullmatch(r"[0-9a-f]{8}", short_id), screen.splitlines()[0]

        keys("Escape")
        # a key sent right after Escape would read as alt+key: wait for the list before the next one
        screen = wait_screen(socket, lambda s: "Executions" in s.splitlines()[0] and short_id in s,
                             what="the list with the short id")
        line = next(ln for ln in screen.splitlines() if short_id in ln)
        assert "build-and-test" in line
        assert "c Cancel" not in footer(screen) and "q Quit" in footer(screen)

        # a command that runs: c is offered, ctrl+c asks first
        keys("n")
        # the workflow files listed (and the list focused): tab goes on to the command
        wait_screen(socket, lambda s: "Or a command" in s and "recent" in s, what="the launch dialog")
        keys("Tab")
        keys("-l", "sleep 30")
        wait_screen(socket, lambda s: "sleep 30" in s, what="the command typed")
        keys("Enter")
        screen = wait_screen(socket, lambda s: "running" in s.splitlines()[0] and "c Cancel" in footer(s),
                             what="the running command, c offered")
        keys("C-c")
        wait_screen(socket, lambda s: "Quit stepflow?" in s, what="the question")
        keys("n")
        wait_screen(socket, lambda s: "Quit stepflow?" not in s, what="the question gone")
        keys("c")
        wait_screen(socket, lambda s: "Cancel execution?" in s, what="cancel question")
        keys("y")
        screen = wait_screen(socket, lambda s: "cancelled" in s.splitlines()[0] and "c Cancel" not in footer(s),
                             what="cancelled, c gone")
        # nothing runs: ctrl+c quits at once
        keys("C-c")
        wait_quit(socket, "ctrl+c")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)

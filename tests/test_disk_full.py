"""A full disk fails the execution writing to it, cleanly (issue 9, item 6): its command is stopped,
`stepflow exec` prints one line naming the store and exits 1, and `stepflow ls` still works. For real:
the data directory is on a 2 MiB tmpfs, filled by the command's own output."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system of its own (tmpfs)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MiB tmpfs needs root (CAP_SYS_ADMIN)")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (CAP_SYS_ADMIN missing?): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def stepflow(data: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STEPFLOW_STORAGE_PATH": str(data)}
    return subprocess.run([sys.executable, "-m", "stepflow.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_a_full_disk_fails_exec_with_one_line_and_ls_still_works(small_disk: Path) -> None:
    data = small_disk / "data"
    db = data / "stepflow.db"
    started = time.monotonic()
    result = stepflow(data, "exec", "--plain", "--", "sh", "-c",
                      "yes 'a line of output long enough to fill two megabytes in a moment ......'")
    assert time.monotonic() - started < 60  # not minutes of retries
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"stepflow: no space left for the store at {db}"], result.stderr
    listed = stepflow(data, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["command"].startswith("sh -c")
    # nothing of it goes on running: no `yes` of this data directory is left
    with contextlib.suppress(FileNotFoundError):
        left = subprocess.run(["pgrep", "-f", "a line of output long enough"], capture_output=True, text=True)
        assert left.stdout.strip() == ""
    # the next command runs if closing the store gave room back (the WAL's checkpoint), or says
    # the same one line at once
    again = stepflow(data, "exec", "--plain", "--", "echo", "hello")
    if again.returncode != 0:
        assert again.returncode == 1
        assert again.stderr.splitlines() == [f"stepflow: no space left for the store at {db}"], again.stderr
    else:
        assert again.stderr == ""

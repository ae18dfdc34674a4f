"""The job folders under a worker's `--work-dir`: one per running job, removed when it ends, and at a
worker's start those that dead workers left (a worker killed with -9 removes nothing).

Each folder holds a lock file (its worker's pid, for people) on which the worker holds an exclusive
`flock` for as long as the job runs. The kernel drops the lock when the worker dies, however it dies:
a folder whose lock can be taken is nobody's, and `sweep` removes it; a live worker's never is. The
job runs in the folder's `work/` (its binary beside it, `bin/`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

LOCK_NAME = "worker.lock"
#: a folder without a lock file this many seconds old is a leftover (one younger is being made)
UNLOCKED_AGE = 60.0


class JobDir:
    """A fresh folder for one job, locked by this process until `remove`."""

    def __init__(self, work_dir: Path, job_id: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"{job_id or 'job'}-", dir=work_dir))
        # locked under another name, then named: a sweep never sees the lock file unlocked
        making = self.path / f".{LOCK_NAME}.new"
        self._lock_fd = os.open(making, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        os.rename(making, self.path / LOCK_NAME)
        self.work = self.path / "work"
        self.work.mkdir()
        (self.path / "bin").mkdir()

    def binary(self, name: str) -> Path:
        return self.path / "bin" / (name or "binary")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)


def sweep(work_dir: Path) -> list[Path]:
    """Remove the job folders no live worker holds; the ones removed."""
    removed: list[Path] = []
    try:
        entries = list(work_dir.iterdir())
    except OSError:
        return removed
    for folder in entries:
        if not folder.is_dir() or folder.is_symlink():
            continue
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            # made before workers locked their folders, or being made this instant
            with contextlib.suppress(OSError):
                if time.time() - folder.stat().st_mtime > UNLOCKED_AGE:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            continue
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live worker's job
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed

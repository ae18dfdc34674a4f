"""The WAL checkpoints of the store writer's connection (storage.write_connection), off its thread.

SQLite's automatic checkpoint (wal_autocheckpoint, every 1,000 pages of WAL) runs inside the COMMIT
that crosses the mark: in a burst of markers ~25 ms every ~0.4 s, during which the writer takes no
batch and the event loop, its sink full, waits for it. Here the write connection has it off, and
after each commit the writer looks at how much of the WAL is not copied back yet (two counters of
the WAL index, the `-shm` file: a read of 100 bytes). Past `CHECKPOINT_PAGES` it wakes a thread of
its own that makes a PASSIVE checkpoint on a connection of its own: it copies back what is
committed without taking any lock a writer or a reader waits for, SQLite's own work, off the GIL.

The WAL file starts again from its beginning (its size bounded, as before) when a write begins on a
WAL copied back whole. A writer never idle would always begin while the other thread still copies,
and the WAL would grow for as long as the burst lasts: past `RESTART_PAGES` the writer copies back
itself what is left (what the other thread has not, a batch or two, instead of all of it) so that its
next transaction starts the WAL again; past `LIMIT_PAGES` (the other thread always behind) it first
waits for the other thread's pass to end, as it waited for its own checkpoint before.

Closing the store is unchanged: the last connection to close checkpoints the WAL and deletes it.
Should the `-shm` file not be there to read (SQLite without shared memory), the write connection keeps
SQLite's automatic checkpoint.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import threading
from pathlib import Path

from storage import pragmas

log = logging.getLogger(__name__)

#: pages of WAL not yet copied back past which a checkpoint is made (SQLite's wal_autocheckpoint)
CHECKPOINT_PAGES = 1000
#: pages of WAL past which the writer copies back the rest itself, so that the WAL starts again
RESTART_PAGES = 2 * CHECKPOINT_PAGES
#: pages of WAL past which the writer waits for the other thread's pass, then copies back the rest
#: itself: the bound of the WAL when the other thread never catches up (a slow disk's fsync)
LIMIT_PAGES = 4 * CHECKPOINT_PAGES

# the WAL index's header (https://www.sqlite.org/walformat.html), in the machine's byte order:
# iVersion at 0, isInit at 12, mxFrame (the last valid frame) at 16; nBackfill (the frames
# copied back into the database) at 96, in the checkpoint information after two copies of the header
_U32 = struct.Struct("=I")
_VERSION = 3007000
_HEADER_BYTES = 100


class Checkpoints:
    def __init__(self, path: Path, shm: int) -> None:
        self.path = path
        self._shm = shm
        self._wake = threading.Event()
        self._busy = False
        #: set while no pass runs on the thread
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="stepflow-store-checkpoints", daemon=True)

    @classmethod
    def start(cls, conn: sqlite3.Connection, path: Path) -> Checkpoints | None:
        """Checkpoints of the WAL that `conn` writes, on a thread started here; None (and SQLite's
        own checkpoints kept) when the WAL index cannot be read."""
        try:
            shm = os.open(f"{path}-shm", os.O_RDONLY)
        except OSError:
            return None
        self = cls(path, shm)
        if self._frames() is None:
            os.close(shm)
            return None
        conn.execute("PRAGMA wal_autocheckpoint=0").fetchall()
        self._thread.start()
        return self

    def _frames(self) -> tuple[int, int] | None:
        """(frames in the WAL, frames of it copied back), or None if the header does not read."""
        try:
            header = os.pread(self._shm, _HEADER_BYTES, 0)
        except OSError:
            return None
        if len(header) < _HEADER_BYTES or _U32.unpack_from(header, 0)[0] != _VERSION or not header[12]:
            return None
        return _U32.unpack_from(header, 16)[0], _U32.unpack_from(header, 96)[0]

    def committed(self, conn: sqlite3.Connection) -> None:
        """After a commit on the write connection `conn`, on its thread."""
        frames = self._frames()
        if frames is None:
            return
        written, copied = frames
        if written >= LIMIT_PAGES:
            self._idle.wait()
        elif self._busy:
            return
        elif written - copied >= CHECKPOINT_PAGES:
            self._busy = True
            self._idle.clear()
            self._wake.set()
            return
        elif written < RESTART_PAGES:
            return
        # the rest, mostly copied already; a PASSIVE checkpoint waits for nothing
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    if conn is None:
                        conn = pragmas.connect(self.path)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    # the next commit past the mark tries again; the WAL is only longer meanwhile
                    log.debug("a checkpoint of the store's WAL failed: %s", exc)
                except Exception:
                    # never expected; the thread goes on, the writer waiting for its pass past
                    # LIMIT_PAGES must see it end
                    log.warning("a checkpoint of the store's WAL failed", exc_info=True)
                finally:
                    self._busy = False
                    self._idle.set()
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        """End the thread (a checkpoint under way first ends) and close its connection."""
        self._stopping = True
        self._wake.set()
        self._thread.join()
        os.close(self._shm)

"""The WAL's checkpoints off the store writer's thread (storage.checkpoints): the writer no longer
copies the WAL back in its COMMIT, yet the WAL file stays bounded across many batches, every line
reads back, and closing the store still leaves no WAL behind."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine.events import ExecutionCreated, LinesLogged
from engine.model import Execution, Stream, new_id
from storage import SqliteStore, checkpoints, database_path
from storage.pragmas import PAGE_SIZE
from tests.test_storage import T0

pytestmark = [pytest.mark.timeout(120)]

#: lines a batch, and the bytes of each: ~40 pages of WAL a batch
BATCH_LINES = 1_000
LINE = "x" * 300


async def test_the_wal_stays_bounded_across_many_batches_and_every_line_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the marks made small, so that a few MB of lines cross them many times
    monkeypatch.setattr(checkpoints, "CHECKPOINT_PAGES", 100)
    monkeypatch.setattr(checkpoints, "RESTART_PAGES", 200)
    monkeypatch.setattr(checkpoints, "LIMIT_PAGES", 400)
    store = SqliteStore(database_path(tmp_path))
    await store.open()
    wal = Path(f"{store.path}-wal")
    e = Execution(id=new_id(), name="build", command="make", created_at=T0)
    batches = 120  # ~4,800 pages: 24 times the mark where the writer starts the WAL again
    peak = 0
    try:
        await store.apply([ExecutionCreated(e.snapshot(), ())])
        with sqlite3.connect(store.path) as db:
            assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # other connections': SQLite's
        for b in range(batches):
            seq = b * BATCH_LINES
            texts = tuple(f"{seq + i} {LINE}" for i in range(BATCH_LINES))
            await store.apply([LinesLogged(e.id, None, Stream.STDOUT, seq, T0, texts)])
            peak = max(peak, wal.stat().st_size)
        total = batches * BATCH_LINES
        assert await store.count_log_lines(e.id) == total
        stored = await store.get_log_lines(e.id)
        assert [line.text for line in stored] == [f"{i} {LINE}" for i in range(total)]
    finally:
        await store.close()
    # without checkpoints the WAL would hold every page written, ~37 MB; it starts again past the
    # limit at the latest, give or take the batch that crossed it
    assert peak < 500 * PAGE_SIZE, f"the WAL grew to {peak} bytes"
    assert not wal.exists() or wal.stat().st_size == 0  # the last connection closed copied it back
    with sqlite3.connect(database_path(tmp_path)) as db:
        assert db.execute("SELECT count(*) FROM log_lines").fetchone()[0] == total

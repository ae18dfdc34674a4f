"""Two processes on one store (issue 9, item 9): closing a store runs `PRAGMA optimize`, which may
want to ANALYZE a table while the other process writes; SQLite then answers "database is locked".
That miss is harmless (the next close does it): no traceback, no warning, a debug line."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.engine import Engine, EngineConfig
from storage import SqliteStore, database_path
from tests.engine_helpers import submit_command

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.timeout(60)]

#: a second process with its own store: opens it (the sweep for lost executions queries a table
#: that has no statistics, which PRAGMA optimize will want to ANALYZE), says "ready", closes on a line
CLOSER = textwrap.dedent("""\
    import asyncio, logging, sys
    from pathlib import Path
    from storage import SqliteStore

    async def main() -> None:
        store = SqliteStore(Path(sys.argv[1]))
        await store.open()
        await store.mark_lost(lambda owner: True)
        print("ready", flush=True)
        sys.stdin.readline()
        await store.close()
        print("closed", flush=True)

    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main())
""")


async def one_execution(data_dir: Path) -> None:
    engine = Engine(SqliteStore(database_path(data_dir)), data_dir, EngineConfig())
    await engine.start()
    try:
        done = await submit_command(engine, ["echo", "one"])
        await engine.wait(done.id)
    finally:
        await engine.shutdown()


def test_closing_a_store_while_another_process_writes_prints_nothing(tmp_path: Path) -> None:
    asyncio.run(one_execution(tmp_path))
    db = database_path(tmp_path)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as writer:
        writer.execute("DELETE FROM sqlite_stat1")  # as on a store never analyzed
        child = subprocess.Popen([sys.executable, "-c", CLOSER, str(db)], cwd=ROOT, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        writer.execute("BEGIN IMMEDIATE")  # this process is writing when the other closes
        try:
            out, err = child.communicate("\n", timeout=30)
        finally:
            writer.execute("ROLLBACK")
    assert child.returncode == 0
    assert out == "closed\n"
    assert err == ""

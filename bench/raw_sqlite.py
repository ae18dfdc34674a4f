"""Log lines into SQLite: `SqliteStore.apply` beside raw `sqlite3.executemany` into the same schema
with the same pragmas, in the same run. Prints lines/s of each and the peak RSS of this process.

Two raw figures: one row per line (the usual executemany), and one row per event with the lines as a
JSON array (the statement the store uses, see storage/writes.py), both from plain sqlite3 in one thread.

    .venv/bin/python bench/raw_sqlite.py [--lines 1000000] [--batch 10000] [--per-event 500]

`--per-event` is how many lines one LinesLogged event carries (the engine sends what one read of the
pipe completed: a few to a few thousand). Each figure is on a fresh file, timed from the first
batch to the last commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.events import ExecutionCreated, LinesLogged  # noqa: E402
from engine.model import Execution, Step, StepKind, Stream, new_id, utcnow  # noqa: E402
from storage import SqliteStore  # noqa: E402
from storage.pragmas import PRAGMAS  # noqa: E402
from storage.writes import INSERT_LINES  # noqa: E402

#: a block of lines as one JSON array that SQLite unpacks (the store's way before it bound them as
#: multi-row VALUES): kept here as a figure to compare with
INSERT_LINES_JSON = (
    "INSERT OR IGNORE INTO log_lines (execution_pk, seq, step_pk, stream, ts, text) "
    "SELECT ?1, ?2 + key, ?3, ?4, ?5, value FROM json_each(?6)"
)


def text_of(i: int) -> str:
    return f"line {i} of the benchmark output"


async def new_store(path: Path) -> tuple[SqliteStore, Execution, list[Step]]:
    """A store with one execution and its branch plus 9 marker steps (lines rotate among them)."""
    store = SqliteStore(path)
    await store.open()
    execution = Execution(id=new_id(), name="bench")
    branch = Step(id=new_id(), execution_id=execution.id, name="local", kind=StepKind.BRANCH)
    markers = [Step(id=new_id(), execution_id=execution.id, name=f"chunk-{i}", kind=StepKind.MARKER,
                    parent_id=branch.id, index=i + 1) for i in range(9)]
    await store.apply([ExecutionCreated(execution, (branch, *markers))])
    return store, execution, [branch, *markers]


def batches(execution: Execution, steps: list[Step], n: int, batch: int, per_event: int) -> Iterator[list[LinesLogged]]:
    """Made one batch at a time, so memory holds one batch, never the million lines."""
    for start in range(0, n, batch):
        events = []
        for first in range(start, min(n, start + batch), per_event):
            last = min(n, start + batch, first + per_event)
            step = steps[(first // 1000) % len(steps)]
            events.append(LinesLogged(execution.id, step.id, Stream.STDOUT, first, utcnow(),
                                      tuple(text_of(i) for i in range(first, last))))
        yield events


async def store_lines_per_second(path: Path, n: int, batch: int, per_event: int) -> float:
    store, execution, steps = await new_store(path)
    try:
        started = time.perf_counter()
        for events in batches(execution, steps, n, batch, per_event):
            await store.apply(events)
        elapsed = time.perf_counter() - started
        assert await store.count_log_lines(execution.id) == n
    finally:
        await store.close()
    return n / elapsed


async def _schema_for_raw(path: Path) -> tuple[int, list[int]]:
    store, execution, steps = await new_store(path)
    await store.close()
    db = sqlite3.connect(path)
    execution_pk = db.execute("SELECT pk FROM executions WHERE id = ?", (execution.id,)).fetchone()[0]
    step_pks = [db.execute("SELECT pk FROM steps WHERE id = ?", (s.id,)).fetchone()[0] for s in steps]
    db.close()
    return execution_pk, step_pks


def raw_lines_per_second(path: Path, n: int, batch: int, per_event: int | None = None) -> float:
    """Python's sqlite3 alone, rows as a list per batch, one transaction per batch; with `per_event`,
    one row per that many lines, as a JSON array."""
    execution_pk, step_pks = asyncio.run(_schema_for_raw(path))
    db = sqlite3.connect(path, isolation_level=None)
    for name, value in PRAGMAS:
        db.execute(f"PRAGMA {name}={value}")
    ts = utcnow().timestamp()
    started = time.perf_counter()
    for start in range(0, n, batch):
        end = min(n, start + batch)
        db.execute("BEGIN IMMEDIATE")
        if per_event is None:
            rows = [(execution_pk, i, step_pks[(i // 1000) % len(step_pks)], "stdout", ts, text_of(i))
                    for i in range(start, end)]
            db.executemany(INSERT_LINES, rows)
        else:
            docs = [(execution_pk, first, step_pks[(first // 1000) % len(step_pks)], "stdout", ts,
                     json.dumps([text_of(i) for i in range(first, min(end, first + per_event))], ensure_ascii=False))
                    for first in range(start, end, per_event)]
            db.executemany(INSERT_LINES_JSON, docs)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--per-event", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_lines_per_second(Path(tmp) / "raw.db", args.lines, args.batch)
        raw_json = raw_lines_per_second(Path(tmp) / "raw-json.db", args.lines, args.batch, args.per_event)
        ours = asyncio.run(store_lines_per_second(Path(tmp) / "store.db", args.lines, args.batch, args.per_event))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"lines: {args.lines:,} in batches of {args.batch:,} ({args.per_event} per LinesLogged event)")
    print(f"raw sqlite3 executemany : {raw:12,.0f} lines/s  (a row per line)")
    print(f"raw sqlite3, json_each  : {raw_json:12,.0f} lines/s  (a row per {args.per_event} lines)")
    print(f"SqliteStore.apply       : {ours:12,.0f} lines/s  ({ours / raw:.0%} of raw)")
    print(f"peak RSS of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()

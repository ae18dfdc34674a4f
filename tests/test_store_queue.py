"""The work queue, counters and registry on the real SQLite store: claims by many workers at once
(each with its own store object, in this process and in others) never hand an item out twice; a
worker that does not hold an item cannot touch it; stale items come back, then fail; serials have no
gaps and no repeats."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from engine.errors import Conflict
from engine.model import utcnow
from engine.store import QueueFilter, QueueItem, QueueStatus, Serial
from storage import SqliteStore, database_path
from tests.engine_helpers import opened_store

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
ITEMS = 1_000
CLAIMERS = 16


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with opened_store(SqliteStore(database_path(tmp_path / "data"))) as s:
        yield s


async def opened(path: Path, n: int) -> list[SqliteStore]:
    stores = [SqliteStore(path) for _ in range(n)]
    for s in stores:
        await s.open()
    return stores


async def enqueue_many(store: SqliteStore, n: int, queue: str = "jobs") -> list[QueueItem]:
    return [await store.enqueue(queue, {"n": i}) for i in range(n)]


async def work(store: SqliteStore, worker: str, queues: list[str]) -> list[str]:
    """Claim and finish until the queue is empty; the ids this worker got."""
    got = []
    while (item := await store.claim(queues, worker)) is not None:
        assert item.status is QueueStatus.RUNNING and item.worker == worker
        got.append(item.id)
        # a worker runs its item before it reports (the store's writes run inline, without a pause
        # of their own: without this one claimer of the process would drain the queue alone)
        await asyncio.sleep(0)
        done = await store.finish(item.id, worker, QueueStatus.COMPLETED, {"by": worker})
        assert done is not None and done.status is QueueStatus.COMPLETED
    return got


# -- claims ----------------------------------------------------------------------------------------
async def test_sixteen_claimers_with_their_own_stores_never_share_an_item(store: SqliteStore) -> None:
    items = await enqueue_many(store, ITEMS)
    claimers = await opened(store.path, CLAIMERS)
    try:
        got = await asyncio.gather(*(work(s, f"w{i}", ["jobs"]) for i, s in enumerate(claimers)))
    finally:
        for s in claimers:
            await s.close()
    claimed = Counter(i for ids in got for i in ids)
    assert sorted(claimed) == sorted(item.id for item in items)
    assert max(claimed.values()) == 1
    assert sum(1 for ids in got if ids) > 1  # they did run side by side
    done, total = await store.list_queue_items(QueueFilter(status=QueueStatus.COMPLETED, limit=ITEMS))
    assert total == ITEMS
    owner = {i: f"w{n}" for n, ids in enumerate(got) for i in ids}
    assert all(item.worker == owner[item.id] and item.result == {"by": item.worker} and item.attempt == 1
               for item in done)


_CLAIMER_PROCESS = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from storage import SqliteStore
    from tests.test_store_queue import work

    async def main(path, prefix, n):
        stores = [SqliteStore(Path(path)) for _ in range(n)]
        for s in stores:
            await s.open()
        print("ready", flush=True)
        sys.stdin.readline()  # the test says go once every process is ready
        try:
            got = await asyncio.gather(*(work(s, f"{prefix}.{i}", ["jobs"]) for i, s in enumerate(stores)))
        finally:
            for s in stores:
                await s.close()
        print(json.dumps(got), flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
""")


def test_sixteen_claimers_in_four_processes_never_share_an_item(tmp_path: Path) -> None:
    path = database_path(tmp_path / "data")

    async def seed() -> list[str]:
        [s] = await opened(path, 1)
        try:
            return [item.id for item in await enqueue_many(s, ITEMS)]
        finally:
            await s.close()

    ids = asyncio.run(seed())
    procs = [
        subprocess.Popen([sys.executable, "-c", _CLAIMER_PROCESS, str(path), f"p{p}", str(CLAIMERS // 4)],
                         cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for p in range(4)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=90)
            assert proc.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    claimed = Counter(i for per_process in results for ids in per_process for i in ids)
    assert sorted(claimed) == sorted(ids)
    assert max(claimed.values()) == 1
    assert sum(1 for per_process in results if any(per_process)) > 1


async def test_a_claim_waits_for_another_process_writing_without_stalling_the_loop(store: SqliteStore) -> None:
    item = await store.enqueue("jobs", "x")
    other = sqlite3.connect(store.path, isolation_level=None)  # another process's writer, as SQLite sees it
    try:
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        claim = asyncio.create_task(store.claim(["jobs"], "w"))
        # the loop goes on meanwhile (a claim waiting inline would hold it for the busy timeout, 5 s)
        done, _ = await asyncio.wait([claim], timeout=0.3)
        assert not done and time.monotonic() - started < 2
        other.execute("COMMIT")
        async with asyncio.timeout(5):
            claimed = await claim
    finally:
        other.close()
    assert claimed is not None and claimed.id == item.id and claimed.worker == "w"


async def test_the_highest_priority_then_the_oldest_is_claimed_first(store: SqliteStore) -> None:
    low = await store.enqueue("jobs", "low", priority=-1)
    first = await store.enqueue("jobs", "first")
    urgent = await store.enqueue("jobs", "urgent", priority=10)
    second = await store.enqueue("jobs", "second")
    elsewhere = await store.enqueue("other", "elsewhere", priority=99)
    order = []
    while (item := await store.claim(["jobs"], "w")) is not None:
        order.append(item.payload)
    assert order == ["urgent", "first", "second", "low"]
    assert [i.id for i in (urgent, first, second, low)]  # all claimed above
    claimed = await store.claim(["jobs", "other"], "w")
    assert claimed is not None and claimed.id == elsewhere.id
    assert await store.claim([], "w") is None


async def test_a_claim_takes_the_first_row_of_an_index(store: SqliteStore) -> None:
    db = sqlite3.connect(store.path)
    try:
        plan = " ".join(r[3] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT pk FROM queue_items WHERE queue IN ('jobs') AND status = 'pending' "
            "ORDER BY priority DESC, pk LIMIT 1"))
    finally:
        db.close()
    assert "ix_queue_items_claim" in plan and "TEMP B-TREE" not in plan


# -- who may touch an item -------------------------------------------------------------------------
async def test_only_the_worker_holding_an_item_may_heartbeat_or_finish_it(store: SqliteStore) -> None:
    item = await store.enqueue("jobs", {"cmd": "make"})
    assert await store.heartbeat(item.id, "w1") is None  # pending: nobody holds it
    assert await store.finish(item.id, "w1", QueueStatus.COMPLETED) is None
    claimed = await store.claim(["jobs"], "w1")
    assert claimed is not None and claimed.attempt == 1 and claimed.claimed_at is not None

    assert await store.heartbeat(item.id, "w2") is None
    assert await store.finish(item.id, "w2", QueueStatus.FAILED, {"error": "not mine"}) is None
    untouched = await store.get_queue_item(item.id)
    assert untouched is not None and untouched.status is QueueStatus.RUNNING and untouched.result is None

    beat = await store.heartbeat(item.id, "w1", execution_id="exec-1")
    assert beat is not None and beat.execution_id == "exec-1" and beat.heartbeat_at >= claimed.heartbeat_at
    with pytest.raises(ValueError):
        await store.finish(item.id, "w1", QueueStatus.PENDING)
    done = await store.finish(item.id, "w1", QueueStatus.FAILED, {"exit_code": 2})
    assert done is not None and done.status is QueueStatus.FAILED and done.result == {"exit_code": 2}
    assert done.finished_at is not None and done.execution_id == "exec-1"
    # finished: nobody may touch it again, its worker neither
    assert await store.finish(item.id, "w1", QueueStatus.COMPLETED) is None
    assert await store.heartbeat(item.id, "w1") is None
    assert await store.get_queue_item("no such item") is None


async def test_cancel_stops_a_pending_item_and_tells_of_a_running_one(store: SqliteStore) -> None:
    waiting = await store.enqueue("jobs", "a")
    running = await store.enqueue("jobs", "b")
    assert (await store.claim(["jobs"], "w")).id == waiting.id  # type: ignore[union-attr]
    cancelled = await store.cancel_queued(running.id)
    assert cancelled is not None and cancelled.status is QueueStatus.CANCELLED and cancelled.finished_at
    assert await store.claim(["jobs"], "w") is None  # a cancelled item is never claimed
    still = await store.cancel_queued(waiting.id)
    assert still is not None and still.status is QueueStatus.RUNNING and still.worker == "w"
    assert await store.cancel_queued("no such item") is None
    # its worker may still stop it, reporting it cancelled
    stopped = await store.finish(waiting.id, "w", QueueStatus.CANCELLED)
    assert stopped is not None and stopped.status is QueueStatus.CANCELLED


# -- stale items -----------------------------------------------------------------------------------
async def test_a_stale_item_goes_back_until_its_attempts_are_spent_then_fails(store: SqliteStore) -> None:
    item = await store.enqueue("jobs", "flaky", max_attempts=2)
    first = await store.claim(["jobs"], "w1")
    assert first is not None and first.heartbeat_at is not None
    # a heartbeat after the cutoff: not stale
    assert await store.requeue_stale("jobs", first.heartbeat_at - timedelta(seconds=1)) == []

    [back] = await store.requeue_stale("jobs", utcnow() + timedelta(seconds=1))
    assert back.id == item.id and back.status is QueueStatus.PENDING and back.attempt == 1
    assert await store.heartbeat(item.id, "w1") is None  # w1 lost it
    assert await store.finish(item.id, "w1", QueueStatus.COMPLETED) is None

    second = await store.claim(["jobs"], "w2")
    assert second is not None and second.id == item.id and second.attempt == 2
    [failed] = await store.requeue_stale("jobs", utcnow() + timedelta(seconds=1))
    assert failed.status is QueueStatus.FAILED and failed.attempt == 2 and failed.finished_at is not None
    assert failed.result == {"error": "no heartbeat from its worker"} and failed.worker == "w2"
    assert await store.claim(["jobs"], "w3") is None
    assert await store.requeue_stale("jobs", utcnow() + timedelta(seconds=1)) == []


async def test_requeue_stale_leaves_the_items_of_other_queues_alone(store: SqliteStore) -> None:
    ours = await store.enqueue("jobs", "ours", max_attempts=2)
    theirs = await store.enqueue("other", "theirs", max_attempts=2)
    assert await store.claim(["jobs"], "w1") is not None and await store.claim(["other"], "w2") is not None
    [back] = await store.requeue_stale("jobs", utcnow() + timedelta(seconds=1))
    assert back.id == ours.id and back.status is QueueStatus.PENDING
    untouched = await store.get_queue_item(theirs.id)
    assert untouched is not None and untouched.status is QueueStatus.RUNNING and untouched.worker == "w2"
    assert await store.heartbeat(theirs.id, "w2") is not None  # its worker still holds it


# -- reads -----------------------------------------------------------------------------------------
async def test_running_items_per_worker(store: SqliteStore) -> None:
    await enqueue_many(store, 4)
    await store.enqueue("other", "x")
    a1, a2, b1 = [await store.claim(["jobs"], w) for w in ("a", "a", "b")]
    assert await store.claim(["other"], "c") is not None
    assert b1 is not None and await store.finish(b1.id, "b", QueueStatus.COMPLETED) is not None
    assert await store.queue_workers("jobs", QueueStatus.RUNNING) == {"a": 2}
    assert await store.queue_workers("jobs", QueueStatus.COMPLETED) == {"b": 1}
    assert await store.queue_workers("other", QueueStatus.RUNNING) == {"c": 1}


async def test_list_and_counts(store: SqliteStore) -> None:
    for i in range(5):
        await store.enqueue("build", i, priority=i % 2, labels={"executr.job": f"j{i}"})
    await store.enqueue("deploy", "d")
    await store.claim(["build"], "w1")
    await store.claim(["build"], "w2")
    page, total = await store.list_queue_items(QueueFilter(queue="build", limit=2))
    assert total == 5 and [item.payload for item in page] == [4, 3]  # newest first
    page, total = await store.list_queue_items(QueueFilter(queue="build", limit=2, offset=4))
    assert total == 5 and [item.payload for item in page] == [0]
    running, total = await store.list_queue_items(QueueFilter(status=QueueStatus.RUNNING))
    assert total == 2 and {item.worker for item in running} == {"w1", "w2"}
    assert {item.payload for item in running} == {1, 3}  # priority 1 first, the oldest of them first
    mine, total = await store.list_queue_items(QueueFilter(worker="w1"))
    assert total == 1 and mine[0].payload == 1 and mine[0].labels == {"executr.job": "j1"}
    counts = {(c.queue, c.status, c.priority): c.count for c in await store.queue_counts()}
    assert counts == {
        ("build", QueueStatus.PENDING, 0): 3,
        ("build", QueueStatus.RUNNING, 1): 2,
        ("deploy", QueueStatus.PENDING, 0): 1,
    }


# -- counters --------------------------------------------------------------------------------------
async def test_fifty_concurrent_next_values_from_separate_stores_have_no_gaps(store: SqliteStore) -> None:
    others = await opened(store.path, 50)
    try:
        values = await asyncio.gather(*(s.next_value("jobs.2026") for s in others))
    finally:
        for s in others:
            await s.close()
    assert sorted(values) == list(range(1, 51))
    assert await store.next_value("jobs.2026") == 51
    assert await store.next_value("another") == 1


# -- registry --------------------------------------------------------------------------------------
async def test_a_serial_is_taken_in_the_transaction_that_adds_the_entry(store: SqliteStore) -> None:
    serial = Serial("targets.2026", "T2026{:04d}")
    web1 = await store.register("target", "web1", {"host": "10.0.0.1"}, serial=serial)
    assert web1.serial == "T20260001" and web1.id >= 1 and web1.data == {"host": "10.0.0.1"}
    with pytest.raises(Conflict):
        await store.register("target", "web1", {"host": "10.0.0.9"}, serial=serial)
    web2 = await store.register("target", "web2", serial=serial)
    assert web2.serial == "T20260002"  # the refused insert used up no number
    # a name is per kind
    runner = await store.register("runner", "web1", {"labels": ["linux"]})
    assert runner.serial is None and runner.id not in (web1.id, web2.id)

    assert await store.get_registered("target", id=web1.id) == web1
    assert await store.get_registered("target", serial="T20260002") == web2
    assert await store.get_registered("runner", name="web1") == runner
    assert await store.get_registered("runner", serial="T20260001") is None
    with pytest.raises(ValueError):
        await store.get_registered("target")


async def test_registry_list_update_and_delete(store: SqliteStore) -> None:
    entries = [await store.register("runner", f"r{i}", {"labels": ["linux"], "config": {"cpus": i}})
               for i in range(5)]
    page, total = await store.list_registered("runner", limit=2, offset=1)
    assert total == 5 and [e.name for e in page] == ["r1", "r2"]
    assert await store.list_registered("target") == ([], 0)

    changed = await store.update_registered("runner", entries[0].id, {"config": {"mem": "1G"}, "labels": None})
    assert changed is not None and changed.data == {"config": {"cpus": 0, "mem": "1G"}}
    assert changed.updated_at >= changed.created_at == entries[0].created_at
    assert await store.update_registered("target", entries[0].id, {"x": 1}) is None  # another kind

    assert await store.unregister("runner", entries[4].id)
    assert not await store.unregister("runner", entries[4].id)
    again = await store.register("runner", "r4")
    assert again.id > entries[4].id  # an id is never given twice


# -- change counter --------------------------------------------------------------------------------
async def test_data_version_changes_with_every_commit_by_anyone(store: SqliteStore) -> None:
    before = await store.data_version()
    assert await store.data_version() == before  # nothing written
    await store.enqueue("jobs", 1)
    mine = await store.data_version()
    assert mine != before
    [other] = await opened(store.path, 1)
    try:
        await other.next_value("c")
    finally:
        await other.close()
    assert await store.data_version() != mine


async def test_any_json_payload_and_result_round_trip(store: SqliteStore) -> None:
    values = [None, 0, 2**70, 1.5, "1", "text ✓", True, [1, "a"], {"nested": {"n": [None]}}]
    items = [await store.enqueue("jobs", v) for v in values]
    assert [(await store.get_queue_item(i.id)).payload for i in items] == values  # type: ignore[union-attr]
    for value in values:
        item = await store.claim(["jobs"], "w")
        assert item is not None
        done = await store.finish(item.id, "w", QueueStatus.COMPLETED, value)
        assert done is not None and done.result == value

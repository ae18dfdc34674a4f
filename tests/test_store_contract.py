"""The contract of engine.store's protocols, run against every store the tests use.

A store a test uses in place of another must keep this contract, or the tests it serves prove
nothing. The in-memory stand-in the TUI's tests used had drifted from the SQLite store (it kept lines
of steps that did not exist under their step, ignored the user filter, lost nothing in `mark_lost`,
counted nothing in `stats`); it is gone, those tests use SQLite files.
Today: the SQLite store on a new file, and on a file made by stepflow's first schema and migrated
at open (so a migration that forgets what tables.py builds shows here). Add any new store to STORES.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from engine.errors import Conflict
from engine.events import (
    ArtifactAdded,
    ExecutionCreated,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
    LinesLogged,
    StepFinished,
    StepStarted,
)
from engine.model import (
    AbortReason,
    Artifact,
    ArtifactFilter,
    ArtifactType,
    Execution,
    ExecutionFilter,
    ExecutionStatus,
    Step,
    StepKind,
    StepStatus,
    Stream,
    new_id,
    utcnow,
)
from engine.store import QueueFilter, QueueStatus, Serial, Store
from storage import SqliteStore
from storage.schema import MIGRATIONS
from tests.engine_helpers import opened_store

T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


async def new_file(path: Path) -> Store:
    return SqliteStore(path)


async def migrated_from_the_first_schema(path: Path) -> Store:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    command.upgrade(config, "0001")
    return SqliteStore(path)


#: how to make each store the tests use (not yet open)
STORES: dict[str, Callable[[Path], Awaitable[Store]]] = {
    "sqlite": new_file,
    "sqlite-migrated": migrated_from_the_first_schema,
}
#: their classes, for the signatures
CLASSES = [SqliteStore]


@pytest.fixture(params=sorted(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with opened_store(await STORES[request.param](tmp_path / "store.sqlite")) as s:
        yield s


def protocols() -> list[type]:
    return [p for p in Store.__mro__ if p not in (Store, object) and getattr(p, "_is_protocol", False)
            and p.__module__.startswith("engine.store")]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_method_of_the_protocols_with_their_signatures(cls: type) -> None:
    """What mypy checks only where a store is passed as one: names, parameters, defaults."""
    checked = []
    for proto in protocols():
        for name, wanted in vars(proto).items():
            if name.startswith("_") or not callable(wanted):
                continue
            got = getattr(cls, name, None)
            assert got is not None, f"{cls.__name__} has no {proto.__name__}.{name}"
            assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(wanted), name
            params = [(p.name, p.kind, p.default) for p in inspect.signature(wanted).parameters.values()]
            assert [(p.name, p.kind, p.default) for p in inspect.signature(got).parameters.values()] == params, name
            checked.append(name)
    assert {"apply", "claim", "next_value", "register", "data_version", "get_log_lines"} <= set(checked)


# -- helpers ---------------------------------------------------------------------------------------
def execution(name: str, *, at: datetime = T0, **kw: object) -> Execution:
    return Execution(id=new_id(), name=name, command=f"make {name}", created_at=at, **kw)  # type: ignore[arg-type]


def step(e: Execution, name: str, index: int, parent: Step | None = None) -> Step:
    kind = StepKind.BRANCH if parent is None else StepKind.WORKFLOW
    return Step(id=new_id(), execution_id=e.id, name=name, kind=kind, index=index, created_at=e.created_at,
                parent_id=None if parent is None else parent.id)


def moved(e: Execution, status: ExecutionStatus, **changes: object) -> Execution:
    snap = e.snapshot()
    snap.status = status
    for key, value in changes.items():
        setattr(snap, key, value)
    return snap


# -- execution events and reads --------------------------------------------------------------------
async def test_executions_written_by_events_read_back_whole(store: Store) -> None:
    e = execution("deploy", user="ana", tags=["prod"], targets=["local"], priority=3, source="cli",
                  labels={"executr.job": "j1"}, admitted_at=T0)
    branch = step(e, "local", 0)
    build = step(e, "build", 1, branch)
    assert not await store.apply([ExecutionCreated(e.snapshot(), (build.snapshot(), branch.snapshot()))])
    assert await store.get_execution(e.id) == e
    assert await store.get_steps(e.id) == [branch, build]

    started = T0 + timedelta(seconds=1)
    running = moved(e, ExecutionStatus.RUNNING, started_at=started)
    build_running = build.snapshot()
    build_running.status, build_running.started_at = StepStatus.RUNNING, started
    build_done = build_running.snapshot()
    build_done.status, build_done.completed_at, build_done.exit_code = StepStatus.COMPLETED, started, 0
    done = moved(running, ExecutionStatus.COMPLETED, completed_at=started, exit_code=0, completed_steps=1)
    await store.apply([ExecutionStarted(running), StepStarted(build_running), StepFinished(build_done),
                       ExecutionFinished(done)])
    # a late snapshot never moves a finished execution back
    await store.apply([ExecutionUpdated(running)])
    assert await store.get_execution(e.id) == done
    assert (await store.get_steps(e.id))[1] == build_done
    assert await store.get_execution("no such id") is None


async def test_a_row_the_store_refuses_is_named_and_the_rest_written(store: Store) -> None:
    good = execution("good")
    ghost = execution("ghost")
    orphan = step(ghost, "orphan", 0)  # of an execution never created
    refused = await store.apply([ExecutionCreated(good.snapshot()), ExecutionUpdated(good.snapshot()),
                                 StepStarted(orphan)])
    assert refused is not None and set(refused) == {ghost.id}
    assert await store.get_execution(good.id) == good


async def test_list_executions_newest_first_with_filters_pages_and_totals(store: Store) -> None:
    made = [execution(f"job {i}", at=T0 + timedelta(minutes=i), user="ana" if i % 2 else "bo") for i in range(7)]
    await store.apply([ExecutionCreated(e.snapshot()) for e in made])
    await store.apply([ExecutionStarted(moved(made[3], ExecutionStatus.RUNNING, started_at=T0))])
    page, total = await store.list_executions(ExecutionFilter(limit=3))
    assert total == 7 and [e.id for e in page] == [made[6].id, made[5].id, made[4].id]
    page, total = await store.list_executions(ExecutionFilter(limit=3, offset=6))
    assert total == 7 and [e.id for e in page] == [made[0].id]
    page, total = await store.list_executions(ExecutionFilter(user="ana"))
    assert total == 3 and {e.user for e in page} == {"ana"}
    page, total = await store.list_executions(ExecutionFilter(status=ExecutionStatus.RUNNING))
    assert (total, [e.id for e in page]) == (1, [made[3].id])
    page, total = await store.list_executions(ExecutionFilter(text="JOB 5"))
    assert (total, [e.id for e in page]) == (1, [made[5].id])
    assert await store.resolve_execution_id(made[2].id[:12]) == [made[2].id]
    assert await store.resolve_execution_id("zzz") == []
    stats = await store.stats()
    assert stats.total_executions == 7 and stats.by_status["running"] == 1 and stats.by_status["pending"] == 6


async def test_fail_execution_changes_only_an_open_execution(store: Store) -> None:
    e, done = execution("a"), execution("b")
    await store.apply([ExecutionCreated(e.snapshot()), ExecutionCreated(done.snapshot()),
                       ExecutionStarted(moved(done, ExecutionStatus.RUNNING, started_at=T0)),
                       ExecutionFinished(moved(done, ExecutionStatus.COMPLETED, started_at=T0, completed_at=T0))])
    assert await store.fail_execution(e.id, "could not store its lines")
    failed = await store.get_execution(e.id)
    assert failed is not None and failed.status is ExecutionStatus.FAILED
    assert failed.error_message == "could not store its lines"
    assert not await store.fail_execution(done.id, "late")
    assert not await store.fail_execution("no such id", "x")


async def test_mark_lost_spares_what_was_never_admitted_and_live_engines(store: Store) -> None:
    running = execution("running", owner="dead")
    admitted = execution("admitted", owner="dead", admitted_at=T0)
    queued = execution("queued", owner="dead")
    alive = execution("alive", owner="alive")
    await store.apply([ExecutionCreated(e.snapshot()) for e in (running, admitted, queued, alive)])
    await store.apply([ExecutionStarted(moved(e, ExecutionStatus.RUNNING, started_at=T0)) for e in (running, alive)])
    lost = await store.mark_lost(lambda owner: owner == "alive")
    assert sorted(lost) == sorted([running.id, admitted.id])
    for execution_id in lost:
        got = await store.get_execution(execution_id)
        assert got is not None and got.status is ExecutionStatus.FAILED
        assert got.abort_reason is AbortReason.ENGINE_LOST
    for spared, status in ((queued, ExecutionStatus.PENDING), (alive, ExecutionStatus.RUNNING)):
        got = await store.get_execution(spared.id)
        assert got is not None and got.status is status
    assert await store.mark_lost() == [alive.id]


async def test_deleting_an_execution_removes_its_steps_lines_and_artifacts(store: Store) -> None:
    e, other = execution("a"), execution("b")
    b = step(e, "local", 0)
    art = Artifact(id=new_id(), execution_id=e.id, step_id=b.id, name="r", file_name="r.txt", file_path="/x/r.txt",
                   file_size=1, mime_type="text/plain", artifact_type=ArtifactType.DATA, sha256="0" * 64,
                   created_at=T0)
    await store.apply([ExecutionCreated(e.snapshot(), (b.snapshot(),)), ExecutionCreated(other.snapshot()),
                       LinesLogged(e.id, b.id, Stream.STDOUT, 0, T0, ("x",)), ArtifactAdded(art)])
    assert await store.delete_execution(e.id)
    assert not await store.delete_execution(e.id)
    assert await store.get_execution(e.id) is None and await store.get_steps(e.id) == []
    assert await store.get_log_lines(e.id) == [] and await store.count_log_lines(e.id) == 0
    assert await store.get_artifact(art.id) is None
    assert await store.get_execution(other.id) == other


# -- log lines -------------------------------------------------------------------------------------
async def test_log_lines_by_window_order_offset_and_step(store: Store) -> None:
    e = execution("logs")
    b = step(e, "local", 0)
    x, y = step(e, "x", 1, b), step(e, "y", 2, b)
    events: list[object] = [ExecutionCreated(e.snapshot(), (b.snapshot(), x.snapshot(), y.snapshot()))]
    owners = [x.id] * 5 + [y.id] * 3 + [None] * 2 + [x.id] * 2  # seqs 0..11
    events += [LinesLogged(e.id, owner, Stream.STDOUT if owner else Stream.SYSTEM, seq, T0, (f"line {seq}",))
               for seq, owner in enumerate(owners)]
    await store.apply(events)  # type: ignore[arg-type]

    def seqs(lines: list) -> list[int]:
        return [ln.seq for ln in lines]

    everything = await store.get_log_lines(e.id)
    assert seqs(everything) == list(range(12)) and everything[3].text == "line 3"
    assert everything[3].step_id == x.id and everything[8].step_id is None
    assert everything[0].timestamp == T0 and everything[8].stream is Stream.SYSTEM
    assert seqs(await store.get_log_lines(e.id, after_seq=2, before_seq=6)) == [3, 4, 5]
    assert seqs(await store.get_log_lines(e.id, newest_first=True, limit=3)) == [11, 10, 9]
    assert seqs(await store.get_log_lines(e.id, offset=10)) == [10, 11]
    assert seqs(await store.get_log_lines(e.id, step_ids=[x.id])) == [0, 1, 2, 3, 4, 10, 11]
    assert seqs(await store.get_log_lines(e.id, step_ids=[x.id], offset=4, limit=2)) == [4, 10]
    assert seqs(await store.get_log_lines(e.id, step_ids=[y.id, x.id], newest_first=True, limit=4)) == [11, 10, 7, 6]
    assert await store.get_log_lines(e.id, step_ids=[]) == []
    assert await store.count_log_lines(e.id) == 12
    assert await store.count_log_lines(e.id, step_ids=[y.id]) == 3
    assert await store.get_log_lines("no such id") == [] and await store.count_log_lines("no such id") == 0


# -- artifacts -------------------------------------------------------------------------------------
async def test_artifacts_by_execution_step_and_type(store: Store) -> None:
    e = execution("a")
    b = step(e, "local", 0)

    def artifact(name: str, kind: ArtifactType, step_id: str | None, minute: int) -> Artifact:
        return Artifact(id=new_id(), execution_id=e.id, step_id=step_id, name=name, file_name=name,
                        file_path=f"/a/{name}", file_size=10, mime_type="text/plain", artifact_type=kind,
                        sha256="1" * 64, created_at=T0 + timedelta(minutes=minute))

    arts = [artifact("one", ArtifactType.LOG, b.id, 0), artifact("two", ArtifactType.DATA, None, 1),
            artifact("three", ArtifactType.LOG, None, 2)]
    await store.apply([ExecutionCreated(e.snapshot(), (b.snapshot(),)), *(ArtifactAdded(a) for a in arts)])
    assert await store.list_artifacts(ArtifactFilter(execution_id=e.id)) == (arts, 3)
    assert await store.list_artifacts(ArtifactFilter(step_id=b.id)) == ([arts[0]], 1)
    assert await store.list_artifacts(ArtifactFilter(artifact_type=ArtifactType.LOG, limit=1)) == ([arts[0]], 2)
    assert await store.get_artifact(arts[1].id) == arts[1]
    assert await store.get_artifact("no such id") is None


# -- queue, counters, registry, change counter -----------------------------------------------------
async def test_the_work_queue(store: Store) -> None:
    low = await store.enqueue("q", {"n": 1}, max_attempts=2)
    high = await store.enqueue("q", {"n": 2}, priority=5, labels={"k": "v"})
    claimed = await store.claim(["q"], "w1")
    assert claimed is not None and claimed.id == high.id and claimed.attempt == 1 and claimed.labels == {"k": "v"}
    assert await store.heartbeat(high.id, "w2") is None
    assert await store.finish(high.id, "w2", QueueStatus.COMPLETED) is None
    done = await store.finish(high.id, "w1", QueueStatus.COMPLETED, {"ok": True})
    assert done is not None and done.status is QueueStatus.COMPLETED and done.result == {"ok": True}
    again = await store.claim(["q"], "w1")
    assert again is not None and again.id == low.id
    [back] = await store.requeue_stale("q", utcnow() + timedelta(seconds=1))
    assert back.status is QueueStatus.PENDING
    cancelled = await store.cancel_queued(low.id)
    assert cancelled is not None and cancelled.status is QueueStatus.CANCELLED
    assert await store.claim(["q"], "w1") is None
    items, total = await store.list_queue_items(QueueFilter(queue="q"))
    assert total == 2 and [i.id for i in items] == [high.id, low.id]
    assert {(c.status, c.count) for c in await store.queue_counts()} == {
        (QueueStatus.COMPLETED, 1), (QueueStatus.CANCELLED, 1)}
    assert await store.get_queue_item(low.id) == cancelled


async def test_counters_and_the_registry(store: Store) -> None:
    assert [await store.next_value("c") for _ in range(3)] == [1, 2, 3]
    serial = Serial("jobs.2026", "J2026{:04d}")
    job = await store.register("job", "nightly", {"steps": 2}, serial=serial)
    assert job.serial == "J20260001"
    with pytest.raises(Conflict):
        await store.register("job", "nightly", serial=serial)
    assert (await store.register("job", "weekly", serial=serial)).serial == "J20260002"
    assert await store.get_registered("job", name="nightly") == job
    updated = await store.update_registered("job", job.id, {"steps": 3, "owner": "ana"})
    assert updated is not None and updated.data == {"steps": 3, "owner": "ana"}
    entries, total = await store.list_registered("job")
    assert total == 2 and [e.name for e in entries] == ["nightly", "weekly"]
    assert await store.unregister("job", job.id)
    assert await store.get_registered("job", id=job.id) is None


async def test_data_version_tells_a_write_happened(store: Store) -> None:
    before = await store.data_version()
    assert await store.data_version() == before
    await store.apply([ExecutionCreated(execution("x").snapshot())])
    after = await store.data_version()
    assert after != before
    await store.next_value("c")
    assert await store.data_version() != after

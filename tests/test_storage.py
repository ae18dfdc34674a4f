"""The SQLite store on a real file: WAL and pragmas, migrations, every entity's round trip, the guarded
status writes, mark_lost, a reader beside a busy writer, log line queries, cascades, stats/optimize."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from engine.events import (
    ArtifactAdded,
    ArtifactDeleted,
    Event,
    ExecutionCreated,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
    LinesDropped,
    LinesLogged,
    Notice,
    StepAdded,
    StepFinished,
    StepStarted,
    StepUpdated,
)
from engine.model import (
    AbortReason,
    Artifact,
    ArtifactFilter,
    ArtifactType,
    Execution,
    ExecutionFilter,
    ExecutionKind,
    ExecutionStatus,
    LogLine,
    Step,
    StepKind,
    StepStatus,
    Stream,
    new_id,
)
from storage import SqliteStore, artifacts_dir, database_path, default_data_dir, pragmas
from storage.pragmas import BUSY_TIMEOUT_MS, CACHE_SIZE_KIB, PAGE_SIZE
from storage.schema import HEAD, MIGRATIONS
from storage.sqlite_store import LOST_MESSAGE
from storage.tables import metadata
from storage.upserts import MultiRow
from storage.writes import SNAPSHOT_ROWS, BatchWriter
from tests.engine_helpers import opened_store

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


# -- helpers ---------------------------------------------------------------------------------------
@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with opened_store(SqliteStore(database_path(tmp_path / "data"))) as s:
        yield s


def plain(store: SqliteStore) -> sqlite3.Connection:
    """A separate, plain sqlite3 connection to the store's file (no pragmas of ours)."""
    return sqlite3.connect(store.path)


def size_of(path: Path) -> int:
    return path.stat().st_size


def execution(name: str = "build", *, at: datetime = T0, **kw: object) -> Execution:
    kw.setdefault("command", f"make {name}")
    return Execution(id=new_id(), name=name, created_at=at, **kw)  # type: ignore[arg-type]


def branch_of(e: Execution, index: int = 0, target: str = "local") -> Step:
    return Step(id=new_id(), execution_id=e.id, name=target, kind=StepKind.BRANCH, index=index, target=target,
                created_at=e.created_at)


def step_of(e: Execution, parent: Step, name: str, index: int, kind: StepKind = StepKind.WORKFLOW) -> Step:
    return Step(id=new_id(), execution_id=e.id, name=name, kind=kind, parent_id=parent.id, index=index,
                created_at=e.created_at)


def lines(e: Execution, step: Step | None, start: int, count: int, stream: Stream = Stream.STDOUT,
          at: datetime = T0) -> LinesLogged:
    return LinesLogged(e.id, None if step is None else step.id, stream, start, at,
                       tuple(f"line {i}" for i in range(start, start + count)))


Row = TypeVar("Row", Execution, Step)


def moved(row: Row, status: ExecutionStatus | StepStatus, **changes: object) -> Row:
    """A snapshot of an execution or a step, in `status` and with `changes`."""
    snap = row.snapshot()
    snap.status = status  # type: ignore[assignment]
    for key, value in changes.items():
        setattr(snap, key, value)
    return snap


def artifact_of(e: Execution, step: Step | None, name: str = "report.xml") -> Artifact:
    return Artifact(
        id=new_id(), execution_id=e.id, step_id=None if step is None else step.id, name=name, file_name=name,
        file_path=f"/data/artifacts/{e.id}/{name}", file_size=1234, mime_type="application/xml",
        artifact_type=ArtifactType.DATA, sha256="ab" * 32, created_at=T0,
    )


async def created(store: SqliteStore, e: Execution, *steps: Step) -> None:
    await store.apply([ExecutionCreated(e.snapshot(), tuple(s.snapshot() for s in steps))])


# -- the file, the pragmas, the migrations ---------------------------------------------------------
async def test_a_new_file_is_in_wal_mode_with_the_schema(store: SqliteStore) -> None:
    db = plain(store)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"executions", "steps", "log_lines", "log_spans", "artifacts", "alembic_version"} <= tables
        for table in ("log_lines", "log_spans"):
            ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
            assert "WITHOUT ROWID" in ddl
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"ix_executions_created_at", "ix_executions_status_created_at", "ix_executions_user_created_at",
                "ix_steps_execution_id_step_index", "ix_log_spans_execution_pk_step_pk_first_seq_lines",
                "ix_artifacts_execution_id_created_at", "ix_artifacts_step_id"} <= indexes
        # a line costs one b-tree insert: no index on log_lines but its primary key
        assert not [name for name in indexes if name.startswith("ix_log_lines")]
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    finally:
        db.close()


async def test_every_pooled_connection_gets_the_pragmas(store: SqliteStore) -> None:
    engine = await store._async_engine()  # made at its first use: the store opens without it
    wanted = {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": BUSY_TIMEOUT_MS,
              "cache_size": -CACHE_SIZE_KIB, "temp_store": 2}
    # three connections checked out at once: three distinct pooled connections
    conns = [await engine.connect() for _ in range(3)]
    try:
        for conn in conns:
            got = {name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar() for name in wanted}
            assert got == wanted
    finally:
        for conn in conns:
            await conn.close()


async def test_the_migrated_schema_is_the_one_in_tables_py(store: SqliteStore) -> None:
    engine = create_engine(f"sqlite:///{store.path}")
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_the_batches_upserts_are_the_sql_sqlalchemy_writes_for_them() -> None:
    """storage.upserts writes them without SQLAlchemy (`exec` does not import it): the same text as
    SQLAlchemy's SQLite dialect compiles from the tables of storage/tables.py."""
    from sqlalchemy import Table, text
    from sqlalchemy.dialects.sqlite import dialect, insert

    from engine.execution.transitions import EXECUTION_TRANSITIONS, STEP_TRANSITIONS
    from storage import writes
    from storage.rows import ARTIFACTS, EXECUTIONS, STEPS
    from storage.tables import artifacts, executions, steps

    def compiled(table: Table, columns: Sequence[str], guard: str | None) -> str:
        stmt = insert(table)
        changed = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in ("pk", "id")}
        upsert = stmt.on_conflict_do_update(index_elements=[table.c.id], set_=changed,
                                            where=None if guard is None else text(guard))
        sql = upsert.compile(dialect=dialect(paramstyle="qmark"), column_keys=list(columns))
        assert tuple(sql.positiontup or ()) == tuple(columns)
        return str(sql)

    assert writes.EXECUTION_UPSERT == compiled(executions, EXECUTIONS.columns,
                                               writes.guard_sql("executions", EXECUTION_TRANSITIONS))
    assert writes.STEP_UPSERT == compiled(steps, STEPS.columns, writes.guard_sql("steps", STEP_TRANSITIONS))
    assert writes.RAW_STATEMENTS["artifact"] == compiled(artifacts, ARTIFACTS.columns, None)


def _schema_of(path: Path) -> dict[str, object]:
    """What SQLite knows of every table and index of a file, text of the DDL aside."""
    db = sqlite3.connect(path)
    try:
        schema: dict[str, object] = {}
        for kind, name, table in db.execute("SELECT type, name, tbl_name FROM sqlite_master ORDER BY name"):
            if kind == "table":
                schema[name] = (db.execute(f"PRAGMA table_xinfo('{name}')").fetchall(),
                                db.execute(f"PRAGMA foreign_key_list('{name}')").fetchall(),
                                "WITHOUT ROWID" in db.execute("SELECT sql FROM sqlite_master WHERE name = ?",
                                                              (name,)).fetchone()[0])
            else:
                schema[name] = (table, db.execute(f"PRAGMA index_xinfo('{name}')").fetchall())
        schema["version"] = db.execute("SELECT version_num FROM alembic_version").fetchall()
        return schema
    finally:
        db.close()


async def test_a_new_file_gets_the_schema_the_migrations_build(tmp_path: Path) -> None:
    """A new file is made from storage/schema.sql (what `create_all` makes of tables.py:
    tests/test_new_schema.py) and stamped, with sqlite3 alone; the same schema as `alembic upgrade
    head` from nothing, and HEAD is Alembic's head."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD
    fast = SqliteStore(database_path(tmp_path / "fast"))
    await fast.open()
    await fast.close()
    migrated = database_path(tmp_path / "migrated")
    migrated.parent.mkdir()
    config.set_main_option("sqlalchemy.url", f"sqlite:///{migrated}")
    command.upgrade(config, "head")
    assert _schema_of(fast.path) == _schema_of(migrated)


async def test_reopening_keeps_the_data_and_migrates_nothing(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    first = SqliteStore(path)
    await first.open()
    e = execution()
    await created(first, e)
    await first.close()
    again = SqliteStore(path)
    await again.open()
    await again.open()  # a second open() of the same object is a no-op
    try:
        assert await again.get_execution(e.id) == e
    finally:
        await again.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    db.close()


async def test_two_stores_creating_one_new_file_at_once_both_open(tmp_path: Path) -> None:
    stores = [SqliteStore(database_path(tmp_path)) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    for s in stores:
        await s.close()


async def test_a_database_from_a_newer_stepflow_is_refused(tmp_path: Path) -> None:
    path = database_path(tmp_path)
    s = SqliteStore(path)
    await s.open()
    await s.close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.close()
    with pytest.raises(RuntimeError, match="schema"):
        await SqliteStore(path).open()


async def test_using_a_store_before_open_is_an_error(tmp_path: Path) -> None:
    s = SqliteStore(database_path(tmp_path))
    with pytest.raises(RuntimeError, match="not open"):
        await s.get_execution("x")
    with pytest.raises(RuntimeError, match="not open"):
        await s.apply([ExecutionDeleted("x")])


# -- round trips -----------------------------------------------------------------------------------
async def test_every_entity_round_trips_with_all_its_fields(store: SqliteStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    e = Execution(
        id=new_id(), name="deploy ünïcode", kind=ExecutionKind.WORKFLOW, command="/srv/flows/deploy.yml",
        working_directory="/srv", created_at=datetime(2025, 3, 1, 14, 0, 0, 999999, tzinfo=plus2),
        environment={"PYTHONUNBUFFERED": "1", "TOKEN": "***"}, user="ana", tags=["prod", "nightly"],
        metadata={"markers": "strict", "nested": {"n": [1, 2.5, None, True]}}, targets=["local", "web1"],
        total_steps=2, workflow_source="name: deploy\nsteps: []\n", rerun_of=new_id(), owner="host:1:2.00",
        priority=-3, admitted_at=datetime(2025, 3, 1, 12, 0, 0, 1, tzinfo=UTC), source="tüi",
        labels={"executr.job": "j-1", "ticket": "ÄB-7"},
    )
    branch = branch_of(e)
    wf = Step(
        id=new_id(), execution_id=e.id, name="test", kind=StepKind.WORKFLOW, parent_id=branch.id, index=1,
        description="runs pytest", created_at=T0, estimated_duration=12.5, stop_on_error=True, progress=None,
        metadata={"retries": 1, "needs": ["setup"]}, target="local",
    )
    marker = step_of(e, wf, "collect", 2, kind=StepKind.MARKER)
    # children listed before their parents: the store orders them for the parent_id foreign key
    await store.apply([ExecutionCreated(e.snapshot(), (marker.snapshot(), wf.snapshot(), branch.snapshot()))])
    assert await store.get_execution(e.id) == e
    assert await store.get_steps(e.id) == [branch, wf, marker]

    started = T0 + timedelta(seconds=1)
    done = T0 + timedelta(seconds=5, microseconds=1)
    e_done = moved(e, ExecutionStatus.FAILED, started_at=started, completed_at=done, exit_code=2,
                   error_message="step test failed", abort_reason=AbortReason.STOP_ON_ERROR, completed_steps=1,
                   current_step_index=2, progress_percentage=50.0)
    wf_running = moved(wf, StepStatus.RUNNING, started_at=started, cpu_percent=97.5, rss_bytes=123_456_789,
                            progress=40.0)
    wf_done = moved(wf_running, StepStatus.FAILED, completed_at=done, exit_code=2, error_message="exit 2",
                         abort_reason=AbortReason.STOP_ON_ERROR)
    art = Artifact(
        id=new_id(), execution_id=e.id, step_id=wf.id, name="junit", file_name="junit.xml",
        file_path="/data/artifacts/x/junit.xml", file_size=2**40, mime_type="application/xml",
        artifact_type=ArtifactType.DOCUMENT, sha256="0f" * 32, description="test report", created_at=done,
        tags=["tests"], is_public=False, retention_days=7,
    )
    logged = [
        LinesLogged(e.id, wf.id, Stream.STDOUT, 0, started, ("\x1b[32mok\x1b[0m\ttab", "", "x" * 100_000)),
        LinesLogged(e.id, wf.id, Stream.STDERR, 3, done, ("warn: ünïcode ✓",)),
        LinesLogged(e.id, None, Stream.SYSTEM, 4, done, ("timed out",)),
    ]
    await store.apply([
        ExecutionStarted(moved(e, ExecutionStatus.RUNNING, started_at=started)),
        StepStarted(wf_running), *logged, StepFinished(wf_done), ArtifactAdded(art), ExecutionFinished(e_done),
    ])

    got = await store.get_execution(e.id)
    assert got == e_done
    assert got is not None and got.created_at.tzinfo == UTC and got.created_at == e.created_at
    assert (await store.get_steps(e.id))[1] == wf_done
    assert await store.get_artifact(art.id) == art
    assert await store.list_artifacts(ArtifactFilter(execution_id=e.id)) == ([art], 1)
    stored = await store.get_log_lines(e.id)
    assert stored == [line for event in logged for line in event.log_lines()]
    assert all(line.timestamp.tzinfo == UTC for line in stored)


async def test_datetimes_round_trip_to_the_microsecond(store: SqliteStore) -> None:
    e = execution()
    await created(store, e)
    stamps = [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(microseconds=7919 * i, days=3 * i) for i in range(200)]
    await store.apply([LinesLogged(e.id, None, Stream.STDOUT, i, at, ("x",)) for i, at in enumerate(stamps)])
    assert [line.timestamp for line in await store.get_log_lines(e.id)] == stamps


# -- guarded status writes -------------------------------------------------------------------------
async def test_a_late_snapshot_never_moves_a_finished_execution_back(store: SqliteStore) -> None:
    e = execution()
    await created(store, e)
    running = moved(e, ExecutionStatus.RUNNING, started_at=T0)
    await store.apply([ExecutionStarted(running)])
    finished = moved(running, ExecutionStatus.COMPLETED, completed_at=T0, exit_code=0, progress_percentage=100.0)
    await store.apply([ExecutionFinished(finished)])
    # an update published before the finish but written after it
    await store.apply([ExecutionUpdated(moved(running, ExecutionStatus.RUNNING, completed_steps=1))])
    assert await store.get_execution(e.id) == finished


async def test_snapshots_in_one_batch_apply_in_order(store: SqliteStore) -> None:
    e = execution()
    running = moved(e, ExecutionStatus.RUNNING, started_at=T0)
    finished = moved(running, ExecutionStatus.CANCELLED, completed_at=T0, abort_reason=AbortReason.USER)
    await store.apply([ExecutionCreated(e), ExecutionStarted(running), ExecutionUpdated(running),
                       ExecutionFinished(finished), ExecutionUpdated(running)])
    assert await store.get_execution(e.id) == finished


async def test_a_transition_the_table_forbids_is_not_written(store: SqliteStore) -> None:
    e = execution()
    await created(store, e)
    await store.apply([ExecutionFinished(moved(e, ExecutionStatus.COMPLETED))])  # pending -> completed
    got = await store.get_execution(e.id)
    assert got is not None and got.status is ExecutionStatus.PENDING


async def test_a_late_step_snapshot_never_reopens_a_finished_step(store: SqliteStore) -> None:
    e = execution()
    b = branch_of(e)
    s = step_of(e, b, "build", 1)
    await created(store, e, b, s)
    running = moved(s, StepStatus.RUNNING, started_at=T0)
    done = moved(running, StepStatus.COMPLETED, completed_at=T0, progress=100.0)
    await store.apply([StepStarted(running), StepUpdated(moved(running, StepStatus.RUNNING, progress=50.0)),
                       StepFinished(done)])
    await store.apply([StepUpdated(moved(running, StepStatus.RUNNING, progress=60.0))])
    assert (await store.get_steps(e.id))[1] == done


# -- mark_lost -------------------------------------------------------------------------------------
async def test_mark_lost_fails_what_a_dead_engine_left_open(store: SqliteStore) -> None:
    dead = execution("dead", owner="host:1:1.00")
    never_started = execution("never started", owner="host:1:1.00")
    never_started.admitted_at = T0
    queued = execution("queued", owner="host:1:1.00")
    alive = execution("alive", owner="host:2:2.00")
    finished = execution("finished", owner="host:1:1.00")
    b = branch_of(dead)
    s_running, s_pending, s_done = step_of(dead, b, "a", 1), step_of(dead, b, "b", 2), step_of(dead, b, "c", 3)
    await created(store, dead, b, s_running, s_pending, s_done)
    await created(store, never_started)
    await created(store, queued)
    await created(store, alive)
    await created(store, finished)
    started = T0 + timedelta(seconds=1)
    await store.apply([
        ExecutionStarted(moved(dead, ExecutionStatus.RUNNING, started_at=started)),
        StepStarted(moved(b, StepStatus.RUNNING, started_at=started)),
        StepStarted(moved(s_running, StepStatus.RUNNING, started_at=started)),
        StepStarted(moved(s_done, StepStatus.RUNNING, started_at=started)),
        StepFinished(moved(s_done, StepStatus.COMPLETED, started_at=started, completed_at=started)),
        ExecutionStarted(moved(alive, ExecutionStatus.RUNNING, started_at=started)),
        ExecutionStarted(moved(finished, ExecutionStatus.RUNNING, started_at=started)),
        ExecutionFinished(moved(finished, ExecutionStatus.COMPLETED, started_at=started, completed_at=started)),
    ])

    lost = await store.mark_lost(lambda owner: owner == "host:2:2.00")
    assert sorted(lost) == sorted([dead.id, never_started.id])
    # a queued execution (never admitted) is not lost: it waits for the next engine to admit it
    waiting = await store.get_execution(queued.id)
    assert waiting is not None and waiting.status is ExecutionStatus.PENDING
    for execution_id in lost:
        got = await store.get_execution(execution_id)
        assert got is not None
        assert got.status is ExecutionStatus.FAILED
        assert got.abort_reason is AbortReason.ENGINE_LOST
        assert got.error_message == LOST_MESSAGE
        assert got.completed_at is not None and got.started_at is not None
    got_dead = await store.get_execution(dead.id)
    assert got_dead is not None and got_dead.started_at == started
    statuses = {s.name: (s.status, s.abort_reason) for s in await store.get_steps(dead.id)}
    assert statuses == {
        "local": (StepStatus.FAILED, AbortReason.ENGINE_LOST),
        "a": (StepStatus.FAILED, AbortReason.ENGINE_LOST),
        "b": (StepStatus.SKIPPED, AbortReason.ENGINE_LOST),
        "c": (StepStatus.COMPLETED, None),
    }
    got_alive = await store.get_execution(alive.id)
    assert got_alive is not None and got_alive.status is ExecutionStatus.RUNNING
    got_finished = await store.get_execution(finished.id)
    assert got_finished is not None and got_finished.status is ExecutionStatus.COMPLETED

    assert await store.mark_lost(lambda owner: owner == "host:2:2.00") == []
    assert await store.mark_lost() == [alive.id]


# -- a reader beside the writer --------------------------------------------------------------------
async def test_readers_see_whole_batches_while_the_writer_writes(store: SqliteStore) -> None:
    e = execution()
    b = branch_of(e)
    await created(store, e, b)
    batch, batches = 2_500, 40
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = threading.Event()

    def plain_reader() -> None:
        db = sqlite3.connect(store.path, timeout=5)
        try:
            while not stop.is_set():
                with db:  # one read transaction: count and max from one snapshot
                    db.execute("BEGIN")
                    n = db.execute("SELECT count(*) FROM log_lines").fetchone()[0]
                    top = db.execute("SELECT max(seq) FROM log_lines").fetchone()[0]
                assert n % batch == 0, n
                assert (top if top is not None else -1) == n - 1
                assert not seen or n >= seen[-1]
                seen.append(n)
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.close()

    other = SqliteStore(store.path)
    await other.open()
    tails: list[int] = []

    async def store_reader() -> None:
        while not stop.is_set():
            tail = await other.get_log_lines(e.id, newest_first=True, limit=1)
            if tail:
                assert tail[0].seq % batch == batch - 1
                tails.append(tail[0].seq)
            await asyncio.sleep(0)

    thread = threading.Thread(target=plain_reader)
    thread.start()
    reader = asyncio.create_task(store_reader())
    try:
        for i in range(batches):
            events = [lines(e, b, i * batch + j, 500) for j in range(0, batch, 500)]
            await store.apply(events)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
        await reader
        await other.close()
    assert not errors, errors
    assert len(set(seen)) >= 3 and len(set(tails)) >= 3
    assert await store.count_log_lines(e.id) == batch * batches


# -- log lines -------------------------------------------------------------------------------------
@pytest.fixture
async def logged(store: SqliteStore) -> tuple[Execution, Step, Step]:
    """1,000 lines: 0-299 step a, 300-599 step b, 600-899 step a, 900-999 no step (stderr)."""
    e = execution()
    b = branch_of(e)
    a, bb = step_of(e, b, "a", 1), step_of(e, b, "b", 2)
    await created(store, e, b, a, bb)
    await store.apply([lines(e, a, 0, 300), lines(e, bb, 300, 300), lines(e, a, 600, 300),
                       lines(e, None, 900, 100, Stream.STDERR)])
    return e, a, bb


def seqs(got: Sequence[LogLine]) -> list[int]:
    return [line.seq for line in got]


async def test_log_line_queries(store: SqliteStore, logged: tuple[Execution, Step, Step]) -> None:
    e, a, b = logged
    assert seqs(await store.get_log_lines(e.id)) == list(range(1000))
    assert seqs(await store.get_log_lines(e.id, newest_first=True, limit=5)) == [999, 998, 997, 996, 995]
    assert seqs(await store.get_log_lines(e.id, limit=3)) == [0, 1, 2]
    assert seqs(await store.get_log_lines(e.id, after_seq=100, before_seq=105)) == [101, 102, 103, 104]
    assert seqs(await store.get_log_lines(e.id, before_seq=300, newest_first=True, limit=2)) == [299, 298]
    assert seqs(await store.get_log_lines(e.id, step_ids=[b.id])) == list(range(300, 600))
    per_a = await store.get_log_lines(e.id, step_ids=[a.id], newest_first=True, limit=3)
    assert seqs(per_a) == [899, 898, 897] and {line.step_id for line in per_a} == {a.id}
    both = await store.get_log_lines(e.id, step_ids=[a.id, b.id], after_seq=295, limit=10)
    assert seqs(both) == list(range(296, 306))
    last = (await store.get_log_lines(e.id, newest_first=True, limit=1))[0]
    assert last == LogLine(e.id, None, 999, Stream.STDERR, T0, "line 999")
    assert await store.count_log_lines(e.id) == 1000
    assert await store.count_log_lines(e.id, step_ids=[a.id]) == 600
    assert await store.count_log_lines(e.id, step_ids=[a.id, b.id]) == 900
    # nothing to match
    assert await store.get_log_lines(e.id, step_ids=[]) == []
    assert await store.get_log_lines(e.id, step_ids=["no such step"]) == []
    assert await store.get_log_lines("no such execution") == []
    assert await store.count_log_lines("no such execution") == 0
    assert await store.count_log_lines(e.id, step_ids=[]) == 0


async def test_the_tail_and_a_step_use_the_indexes(store: SqliteStore, logged: tuple[Execution, Step, Step]) -> None:
    db = plain(store)
    try:
        tail = db.execute("EXPLAIN QUERY PLAN SELECT seq FROM log_lines WHERE execution_pk = 1 AND seq > -1 "
                          "ORDER BY seq DESC LIMIT 100").fetchall()
        per_step = db.execute("EXPLAIN QUERY PLAN SELECT first_seq, lines FROM log_spans WHERE execution_pk = 1 "
                              "AND step_pk = 2 AND first_seq > -1 ORDER BY first_seq LIMIT 100").fetchall()
    finally:
        db.close()
    assert "USING PRIMARY KEY (execution_pk=? AND seq>?)" in str(tail)
    assert "ix_log_spans_execution_pk_step_pk_first_seq_lines (execution_pk=? AND step_pk=? AND first_seq>?)" \
        in str(per_step)
    assert "TEMP B-TREE" not in str(tail) + str(per_step)


async def test_a_step_has_a_span_per_run_of_its_lines(store: SqliteStore,
                                                       logged: tuple[Execution, Step, Step]) -> None:
    """Events that continue the same step's previous one join its span; lines without a step have
    spans of no step."""
    e, a, b = logged
    await store.apply([lines(e, b, 1000, 10), lines(e, b, 1010, 10), lines(e, a, 1020, 5)])
    db = plain(store)
    try:
        spans = db.execute("SELECT first_seq, lines FROM log_spans ORDER BY first_seq").fetchall()
    finally:
        db.close()
    assert spans == [(0, 300), (300, 300), (600, 300), (900, 100), (1000, 20), (1020, 5)]
    assert await store.count_log_lines(e.id) == 1025


async def test_a_long_run_is_cut_into_spans_of_bounded_length(store: SqliteStore) -> None:
    from storage.tables import MAX_SPAN_LINES

    e = execution()
    b = branch_of(e)
    await created(store, e, b)
    n = 2 * MAX_SPAN_LINES + 500
    await store.apply([lines(e, b, 0, 500), lines(e, b, 500, n - 500)])
    db = plain(store)
    try:
        spans = db.execute("SELECT first_seq, lines FROM log_spans ORDER BY first_seq").fetchall()
    finally:
        db.close()
    assert spans == [(0, MAX_SPAN_LINES), (MAX_SPAN_LINES, MAX_SPAN_LINES), (2 * MAX_SPAN_LINES, 500)]
    # a bound in the middle of a span, from either side
    middle = MAX_SPAN_LINES + 17
    assert seqs(await store.get_log_lines(e.id, step_ids=[b.id], after_seq=middle, limit=2)) == [middle + 1, middle + 2]
    assert seqs(await store.get_log_lines(e.id, step_ids=[b.id], before_seq=middle, limit=2, newest_first=True)) \
        == [middle - 1, middle - 2]
    assert await store.count_log_lines(e.id, step_ids=[b.id]) == n


async def test_lines_stored_before_spans_get_theirs_from_the_migration(tmp_path: Path) -> None:
    """A file of schema 0001 (the index by step, no spans) migrated to 0002: the same reads."""
    from alembic import command
    from alembic.config import Config


    path = database_path(tmp_path)
    s = SqliteStore(path)
    await s.open()
    e = execution()
    b = branch_of(e)
    x, y = step_of(e, b, "x", 1), step_of(e, b, "y", 2)
    await created(s, e, b, x, y)
    await s.close()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{path}")
    command.downgrade(config, "0001")
    db = sqlite3.connect(path)
    with db:
        pks = dict(db.execute("SELECT id, pk FROM steps"))
        # x: 0-14,999 and 20,000-20,099; y: 15,000-19,999; no step: 20,100-20,199
        owner = [x.id] * 15_000 + [y.id] * 5_000 + [x.id] * 100 + [None] * 100
        db.executemany("INSERT INTO log_lines (execution_pk, seq, step_pk, stream, ts, text) VALUES (1, ?, ?, 'stdout', 0, ?)",
                       [(i, pks.get(o), f"line {i}") for i, o in enumerate(owner)])
    db.close()
    again = SqliteStore(path)
    await again.open()
    try:
        assert await again.count_log_lines(e.id, step_ids=[x.id]) == 15_100
        assert await again.count_log_lines(e.id, step_ids=[y.id]) == 5_000
        assert seqs(await again.get_log_lines(e.id, step_ids=[x.id], offset=14_999, limit=2)) == [14_999, 20_000]
        assert seqs(await again.get_log_lines(e.id, step_ids=[y.id], newest_first=True, limit=1)) == [19_999]
        assert await again.count_log_lines(e.id) == 20_200
    finally:
        await again.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT first_seq, lines FROM log_spans ORDER BY first_seq").fetchall() == [
        (0, 10_000), (10_000, 5_000), (15_000, 5_000), (20_000, 100), (20_100, 100)]
    db.close()


@pytest.mark.xdist_group("measured")  # timed or measured: one at a time (see pyproject.toml)
@pytest.mark.slow
async def test_the_tail_of_a_million_lines_takes_milliseconds(store: SqliteStore) -> None:
    e = execution()
    b = branch_of(e)
    steps = [b, *(step_of(e, b, f"s{i}", i + 1) for i in range(9))]
    await created(store, e, *steps)
    n, batch = 1_000_000, 10_000
    for start in range(0, n, batch):
        await store.apply([lines(e, steps[(i // 1000) % 10], i, 500) for i in range(start, start + batch, 500)])
    await store.get_log_lines(e.id, newest_first=True, limit=100)  # warm the page cache
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        tail = await store.get_log_lines(e.id, newest_first=True, limit=100)
        timings.append(time.perf_counter() - started)
    assert seqs(tail) == list(range(n - 1, n - 101, -1))
    # a few ms here; generous for a loaded CI machine
    assert min(timings) < 0.05, timings
    started = time.perf_counter()
    per_step = await store.get_log_lines(e.id, step_ids=[steps[3].id], newest_first=True, limit=100)
    assert time.perf_counter() - started < 0.1
    assert seqs(per_step)[0] == 993_999
    assert await store.count_log_lines(e.id) == n


async def test_an_offset_skips_lines_of_the_selected_set(store: SqliteStore,
                                                       logged: tuple[Execution, Step, Step]) -> None:
    e, a, b = logged  # a: 0-299 and 600-899, b: 300-599, none: 900-999
    assert seqs(await store.get_log_lines(e.id, step_ids=[a.id], offset=299, limit=3)) == [299, 600, 601]
    assert seqs(await store.get_log_lines(e.id, step_ids=[a.id, b.id], offset=598, limit=4)) == [598, 599, 600, 601]
    assert seqs(await store.get_log_lines(e.id, step_ids=[a.id], offset=2, limit=2, newest_first=True)) == [897, 896]
    assert seqs(await store.get_log_lines(e.id, step_ids=[b.id], after_seq=400, offset=10, limit=2)) == [411, 412]
    assert seqs(await store.get_log_lines(e.id, step_ids=[a.id], before_seq=650, offset=40, limit=100,
                                          newest_first=True))[:3] == [609, 608, 607]
    assert seqs(await store.get_log_lines(e.id, offset=995)) == [995, 996, 997, 998, 999]
    assert await store.get_log_lines(e.id, step_ids=[b.id], offset=300) == []
    got = (await store.get_log_lines(e.id, step_ids=[b.id, a.id], offset=450, limit=1))[0]
    assert got == LogLine(e.id, b.id, 450, Stream.STDOUT, T0, "line 450")


def _statements(store: SqliteStore, call) -> list[str]:
    """The SQL (parameters bound) a read function runs on a plain connection."""
    from storage import queries

    db = plain(store)
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    try:
        call(queries, db)
    finally:
        db.close()
    return [sql for sql in seen if "log_lines" in sql or "log_spans" in sql]


async def test_a_step_filtered_read_picks_ranges_from_the_spans(
        store: SqliteStore, logged: tuple[Execution, Step, Step]) -> None:
    """With a step filter the read merges one ordered scan of ix_log_spans_execution_pk_step_pk_first_seq_lines
    per step, skips an offset a span at a time, and reads the page's lines by key range; nothing is
    sorted, log_lines is never scanned."""
    e, a, b = logged
    for step_ids in ([a.id], [a.id, b.id]):
        for newest_first in (False, True):
            statements = _statements(store, lambda q, db, ids=step_ids, nf=newest_first: q.get_log_lines(
                db, e.id, ids, -1, None, 512, nf, 250))
            db = plain(store)
            try:
                plans = [" | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql)) for sql in statements]
            finally:
                db.close()
            spans, *pages = plans
            assert "COVERING INDEX ix_log_spans_execution_pk_step_pk_first_seq_lines (execution_pk=? AND step_pk=? " \
                "AND first_seq>?)" in spans, spans
            if len(step_ids) > 1:
                assert "MERGE (UNION ALL)" in spans, spans
            assert pages and all("PRIMARY KEY (execution_pk=? AND seq>? AND seq<?)" in page for page in pages), pages
            assert all("TEMP B-TREE" not in plan and "SCAN" not in plan for plan in plans), plans


@pytest.mark.xdist_group("measured")  # timed or measured: one at a time (see pyproject.toml)
async def test_a_far_offset_in_a_filtered_log_is_one_fast_read(store: SqliteStore) -> None:
    """Short benchmark: 200,000 lines in four steps, a jump to the middle of one step's lines and
    of the subtree's is one read of a few ms (it skips a span at a time)."""
    e = execution()
    b = branch_of(e)
    steps = [b, *(step_of(e, b, f"s{i}", i + 1) for i in range(3))]
    await created(store, e, *steps)
    n = 200_000
    await store.apply([lines(e, steps[(i // 100) % 4], i, 100) for i in range(0, n, 100)])
    one, rest = [steps[2].id], [s.id for s in steps]
    await store.get_log_lines(e.id, step_ids=one, offset=25_000, limit=512)  # warm the page cache
    # steps[2] holds the hundreds 2, 6, 10...: its 25,000th line is the first of hundred 1002
    for step_ids, offset, first in ((one, 25_000, 100_200), (rest, 150_000, 150_000)):
        started = time.perf_counter()
        got = await store.get_log_lines(e.id, step_ids=step_ids, offset=offset, limit=512)
        took = time.perf_counter() - started
        assert seqs(got)[0] == first and len(got) == 512
        # ~2-10 ms here; generous for a loaded CI machine
        assert took < 0.25, took


async def test_lines_json_cannot_carry_are_stored_whole(store: SqliteStore) -> None:
    """Lines went to SQLite as JSON, where a NUL ended the text; bound as parameters they are
    stored whole, NULs and all."""
    e = execution()
    await created(store, e)
    odd = ("a\x00b", "\x00", "literal \\u0000 text", "emoji 😀 ünï \u2028")
    await store.apply([lines(e, None, 0, 3), LinesLogged(e.id, None, Stream.STDOUT, 3, T0, odd),
                       lines(e, None, 7, 3)])
    got = await store.get_log_lines(e.id)
    assert [line.text for line in got] == ["line 0", "line 1", "line 2", *odd, "line 7", "line 8", "line 9"]
    assert seqs(got) == list(range(10))


async def test_long_and_short_blocks_of_one_batch_read_back_in_order(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A long block (a command's plain output) goes in statements of its own, its lines a parameter
    each; short ones (marker pairs) together, six parameters a line. Both carry a NUL, a lone
    surrogate (stored as U+FFFD) and the step, across the statements' sizes (1,000 + 37 lines)."""
    e = execution()
    b = branch_of(e)
    await created(store, e, b)
    long_n = 1_037
    long_lines = tuple(f"long {i}" + ("\x00nul" if i == 600 else "") + (" \udc80" if i == 1_030 else "")
                       for i in range(long_n))
    short = [LinesLogged(e.id, b.id, Stream.STDOUT, 2 + long_n + 3 * k, T0,
                         (f"short {k}", "a\x00b" if k == 1 else "x", f"end {k}")) for k in range(5)]
    await store.apply([lines(e, b, 0, 2), LinesLogged(e.id, b.id, Stream.STDERR, 2, T0, long_lines), *short])
    got = await store.get_log_lines(e.id)
    expected = ["line 0", "line 1", *(text.replace("\udc80", "\ufffd") for text in long_lines),
                *(text for event in short for text in event.lines)]
    assert [line.text for line in got] == expected
    assert seqs(got) == list(range(len(expected)))
    assert {line.step_id for line in got} == {b.id}
    assert [line.stream for line in got[2:2 + long_n]] == [Stream.STDERR] * long_n
    assert "UTF-8 cannot encode" in caplog.text
    assert len(await store.get_log_lines(e.id, step_ids=[b.id], limit=5_000)) == len(expected)


def test_a_batchs_rows_go_in_few_statements_of_prepared_sizes() -> None:
    """Whole statements of `chunk` rows, then the rest in one statement of a size that is a multiple
    of an eighth of `chunk` (a few sizes, kept prepared), or its own size when small; fewer rows a
    statement where SQLite binds fewer parameters."""
    statements = MultiRow(4, 256, lambda rows: f"{rows} rows")
    assert list(statements.padded(256 * 2 + 37, 32_766)) == [(256, 256), (256, 256), (37, 64)]
    assert list(statements.padded(5, 32_766)) == [(5, 5)]
    assert list(statements.padded(256, 32_766)) == [(256, 256)]
    assert list(statements.padded(0, 32_766)) == []
    assert list(statements.padded(130, 400)) == [(100, 100), (30, 36)]  # 100 rows of 4 at most: a grain of 12
    sizes = {size for n in range(1, 2_000) for _rows, size in statements.padded(n, 32_766)}
    assert sizes == set(range(1, 9)) | set(range(32, 257, 32))


async def test_a_batch_fits_an_sqlite_that_binds_few_parameters(store: SqliteStore) -> None:
    """Statements take fewer rows, and look up fewer ids, where SQLite binds fewer parameters
    (SQLITE_LIMIT_VARIABLE_NUMBER: 999 before 3.32, less where set so): every step and line of a
    batch is still stored, each line with its step."""
    e = execution()
    b = branch_of(e)
    await created(store, e, b)
    steps = [replace(step_of(e, b, f"step {i}", i + 1, StepKind.MARKER), status=StepStatus.RUNNING)
             for i in range(300)]
    events = [*(StepAdded(s) for s in steps), lines(e, b, 0, 100), LinesLogged(e.id, b.id, Stream.STDOUT, 100, T0,
                                                                              ("a", "b", "c")),
              *(LinesLogged(e.id, s.id, Stream.STDOUT, 103 + i, T0, (s.name,)) for i, s in enumerate(steps))]
    batch = BatchWriter()
    batch.add(events)
    db = pragmas.connect(store.path)
    try:
        db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 50)  # two steps of 21 values, eight lines of 6
        db.execute("BEGIN IMMEDIATE")
        batch.write(db)
        db.execute("COMMIT")
    finally:
        db.close()
    assert batch.lines_written == 403 and not batch.refused
    assert [s for s in await store.get_steps(e.id) if s.parent_id == b.id] == steps
    got = await store.get_log_lines(e.id, limit=1_000)
    assert [line.text for line in got] == [*(f"line {i}" for i in range(100)), "a", "b", "c", *(s.name for s in steps)]
    assert [line.step_id for line in got[103:]] == [s.id for s in steps]


async def test_a_line_utf8_cannot_encode_is_stored_with_a_replacement(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    e = execution()
    await created(store, e)
    await store.apply([lines(e, None, 0, 2), LinesLogged(e.id, None, Stream.STDERR, 2, T0, ("bad \udc80 name",)),
                       lines(e, None, 3, 2)])
    assert [line.text for line in await store.get_log_lines(e.id)] == [
        "line 0", "line 1", "bad \ufffd name", "line 3", "line 4"]
    assert "UTF-8 cannot encode" in caplog.text


async def test_lines_without_sqlite_json(store: SqliteStore) -> None:
    store._json_keys = False  # as on an SQLite built without JSON functions
    e = execution()
    b = branch_of(e)
    await created(store, e, b)
    await store.apply([lines(e, b, 0, 5), LinesLogged(e.id, None, Stream.STDERR, 5, T0, ("a\x00b", "bad \udc80"))])
    got = await store.get_log_lines(e.id)
    assert [(line.seq, line.step_id, line.text) for line in got] == [
        *((i, b.id, f"line {i}") for i in range(5)), (5, None, "a\x00b"), (6, None, "bad \ufffd")]


async def test_a_repeated_seq_is_ignored_and_the_rest_kept(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    e = execution()
    await created(store, e)
    await store.apply([lines(e, None, 0, 10)])
    assert "repeated" not in caplog.text
    await store.apply([LinesLogged(e.id, None, Stream.STDOUT, 5, T0, tuple(f"again {i}" for i in range(5, 15)))])
    got = await store.get_log_lines(e.id)
    assert seqs(got) == list(range(15))
    assert got[5].text == "line 5" and got[14].text == "again 14"
    assert "5 log line(s) repeated" in caplog.text


async def test_rows_the_database_refuses_are_skipped_not_the_batch(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    e = execution()
    b = branch_of(e)
    ghost = execution("never created")
    ghost_branch = branch_of(ghost)
    refused = await store.apply([
        StepAdded(ghost_branch),  # its execution is unknown: foreign key
        ExecutionCreated(e, (b,)),
        lines(ghost, None, 0, 5),  # lines of an unknown execution
        lines(e, b, 0, 5),
        LinesLogged(e.id, "unknown step", Stream.STDOUT, 5, T0, ("kept without its step",)),
        ArtifactAdded(artifact_of(e, ghost_branch)),  # unknown step: foreign key
        ArtifactAdded(artifact_of(e, b, "good.txt")),
        Notice(e.id, None, "warning", "shown, not stored"),
        LinesDropped(e.id, 3),
    ])
    assert await store.get_execution(e.id) == e
    assert await store.get_execution(ghost.id) is None
    assert [(line.seq, line.step_id) for line in await store.get_log_lines(e.id)] == [
        (0, b.id), (1, b.id), (2, b.id), (3, b.id), (4, b.id), (5, None)]
    arts, total = await store.list_artifacts(ArtifactFilter(execution_id=e.id))
    assert total == 1 and arts[0].name == "good.txt"
    # the executions of what was skipped are named, for the store writer to fail them loudly
    assert set(refused) == {ghost.id, e.id}
    assert "FOREIGN KEY" in refused[e.id]
    assert "dropped 5 log line(s) of unknown execution" in caplog.text


# -- listing and lookups ---------------------------------------------------------------------------
async def test_list_executions_newest_first_with_filters_and_pages(store: SqliteStore) -> None:
    made = [
        execution("Build docs", at=T0, user="ana"),
        execution("deploy 50% canary", at=T0 + timedelta(minutes=1), user="bob"),
        execution("test", at=T0 + timedelta(minutes=2), user="ana", command="pytest -k BUILD"),
        execution("lint", at=T0 + timedelta(minutes=3), user="bob"),
        execution("nightly", at=T0 + timedelta(minutes=4), user="ana"),
    ]
    for e in made:
        await created(store, e)
    await store.apply([ExecutionStarted(moved(made[3], ExecutionStatus.RUNNING, started_at=T0))])

    page, total = await store.list_executions(ExecutionFilter())
    assert [e.name for e in page] == ["nightly", "lint", "test", "deploy 50% canary", "Build docs"] and total == 5
    page, total = await store.list_executions(ExecutionFilter(limit=2, offset=1))
    assert [e.name for e in page] == ["lint", "test"] and total == 5
    page, total = await store.list_executions(ExecutionFilter(status=ExecutionStatus.RUNNING))
    assert [e.name for e in page] == ["lint"] and total == 1
    page, total = await store.list_executions(ExecutionFilter(user="ana", limit=1))
    assert [e.name for e in page] == ["nightly"] and total == 3
    # case-insensitive, in the name or the command
    page, total = await store.list_executions(ExecutionFilter(text="build"))
    assert [e.name for e in page] == ["test", "Build docs"] and total == 2
    # LIKE's wildcards in the text are plain characters
    page, total = await store.list_executions(ExecutionFilter(text="50%"))
    assert [e.name for e in page] == ["deploy 50% canary"]
    assert await store.list_executions(ExecutionFilter(text="_")) == ([], 0)


async def test_reads_too_slow_for_the_loop_move_to_a_reader_thread(store: SqliteStore,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Small reads run inline on the event loop within a time budget; past it, SQLite interrupts
    the statement and the read runs again on a reader thread, with the same answer."""
    made = [execution(f"run {i}", at=T0 + timedelta(seconds=i), user="ana" if i % 3 else "bob") for i in range(300)]
    for e in made:
        await created(store, e)
    flt = ExecutionFilter(user="ana", limit=5, offset=150)
    inline = await store.list_executions(flt)
    assert store._reader.moved == 0
    monkeypatch.setattr("storage.reads.INLINE_BUDGET", -1.0)
    moved = await store.list_executions(flt)
    assert store._reader.moved == 1
    assert moved == inline and inline[1] == 200
    assert [e.name for e in inline[0]] == [f"run {i}" for i in range(299, -1, -1) if i % 3][150:155]
    # the interrupted read left no transaction open on the loop's connection
    monkeypatch.setattr("storage.reads.INLINE_BUDGET", 1.0)
    assert await store.list_executions(flt) == inline
    assert (await store.get_execution(made[7].id)) == made[7]


async def test_resolve_execution_id_by_prefix(store: SqliteStore) -> None:
    ids = ["abc-1", "abc-2", "abd-1"]
    for i in ids:
        e = execution()
        e.id = i
        await created(store, e)
    assert await store.resolve_execution_id("ab") == ids
    assert await store.resolve_execution_id("abc") == ["abc-1", "abc-2"]
    assert await store.resolve_execution_id("abc-2") == ["abc-2"]
    assert await store.resolve_execution_id("x") == []
    assert await store.resolve_execution_id("a%") == []


async def test_list_artifacts_filters(store: SqliteStore) -> None:
    e = execution()
    b = branch_of(e)
    s = step_of(e, b, "build", 1)
    await created(store, e, b, s)
    on_step = artifact_of(e, s, "a.xml")
    image = artifact_of(e, None, "b.png")
    image.artifact_type = ArtifactType.IMAGE
    image.created_at = T0 + timedelta(seconds=1)
    await store.apply([ArtifactAdded(on_step), ArtifactAdded(image)])
    assert await store.list_artifacts(ArtifactFilter()) == ([on_step, image], 2)
    assert await store.list_artifacts(ArtifactFilter(step_id=s.id)) == ([on_step], 1)
    assert await store.list_artifacts(ArtifactFilter(artifact_type=ArtifactType.IMAGE)) == ([image], 1)
    assert await store.list_artifacts(ArtifactFilter(limit=1, offset=1)) == ([image], 2)
    await store.apply([ArtifactDeleted(e.id, image.id)])
    assert await store.get_artifact(image.id) is None
    assert await store.list_artifacts(ArtifactFilter(execution_id=e.id)) == ([on_step], 1)


# -- deletion --------------------------------------------------------------------------------------
async def test_deleting_an_execution_removes_its_rows_only(store: SqliteStore) -> None:
    keep, gone, gone_too = execution("keep"), execution("gone"), execution("gone too")
    for e in (keep, gone, gone_too):
        b = branch_of(e)
        s = step_of(e, b, "s", 1)
        m = step_of(e, s, "m", 2, kind=StepKind.MARKER)
        await created(store, e, b, s, m)
        await store.apply([lines(e, m, 0, 100), ArtifactAdded(artifact_of(e, m))])

    assert await store.delete_execution(gone.id) is True
    assert await store.delete_execution(gone.id) is False
    await store.apply([ExecutionDeleted(gone_too.id)])

    for e in (gone, gone_too):
        assert await store.get_execution(e.id) is None
        assert await store.get_steps(e.id) == []
        assert await store.count_log_lines(e.id) == 0
        assert await store.list_artifacts(ArtifactFilter(execution_id=e.id)) == ([], 0)
    assert len(await store.get_steps(keep.id)) == 3
    assert await store.count_log_lines(keep.id) == 100
    db = plain(store)
    try:
        counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("executions", "steps", "log_lines", "artifacts")]
    finally:
        db.close()
    assert counts == [1, 3, 100, 1]


async def test_lines_after_a_deletion_in_the_same_batch_go_to_the_new_rows(store: SqliteStore) -> None:
    old, new = execution("old"), execution("new")
    await created(store, old)
    await store.apply([lines(old, None, 0, 3), ExecutionDeleted(old.id), ExecutionCreated(new),
                       lines(new, None, 0, 2)])
    assert await store.count_log_lines(new.id) == 2
    assert await store.get_execution(old.id) is None


# -- stats and optimize ----------------------------------------------------------------------------
async def test_stats(store: SqliteStore, logged: tuple[Execution, Step, Step]) -> None:
    e, _a, _b = logged
    later = execution("later", at=T0 + timedelta(days=1))
    await created(store, later)
    await store.apply([ArtifactAdded(artifact_of(later, None)),
                       ExecutionStarted(moved(later, ExecutionStatus.RUNNING, started_at=T0))])
    stats = await store.stats()
    assert stats.total_executions == 2
    assert stats.by_status == {"pending": 1, "running": 1, "completed": 0, "failed": 0, "cancelled": 0}
    assert (stats.total_steps, stats.total_artifacts, stats.total_log_lines) == (3, 1, 1000)
    on_disk = sum(p.stat().st_size for p in store.path.parent.iterdir() if p.name.startswith(store.path.name))
    assert stats.database_size_bytes == on_disk > 0
    assert stats.wal_mode == "wal"
    assert stats.cache_size == CACHE_SIZE_KIB * 1024 // PAGE_SIZE  # pages
    assert stats.storage_path == str(store.path)
    assert stats.oldest_execution is not None and datetime.fromisoformat(stats.oldest_execution) == e.created_at
    assert stats.newest_execution is not None and datetime.fromisoformat(stats.newest_execution) == later.created_at


async def test_stats_of_an_empty_store(store: SqliteStore) -> None:
    stats = await store.stats()
    assert stats.total_executions == 0 and stats.oldest_execution is None and stats.newest_execution is None


async def test_optimize_analyzes_and_truncates_the_wal(
    store: SqliteStore, logged: tuple[Execution, Step, Step]
) -> None:
    wal = Path(f"{store.path}-wal")
    assert size_of(wal) > 0
    done = await store.optimize()
    assert len(done) == 3
    assert done[0].startswith("ANALYZE") and done[1].startswith("PRAGMA optimize")
    assert "truncated" in done[2]
    assert size_of(wal) == 0
    db = plain(store)
    try:
        analyzed = {r[0] for r in db.execute("SELECT tbl FROM sqlite_stat1")}
    finally:
        db.close()
    assert {"executions", "steps", "log_lines"} <= analyzed
    # still a working store afterwards
    e, _a, _b = logged
    assert await store.count_log_lines(e.id) == 1000


# -- paths -----------------------------------------------------------------------------------------
def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEPFLOW_STORAGE_PATH", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "explicit"
    monkeypatch.delenv("STEPFLOW_STORAGE_PATH")
    assert default_data_dir() == tmp_path / "xdg" / "stepflow"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "stepflow"
    assert database_path(tmp_path) == tmp_path / "stepflow.db"
    assert artifacts_dir(tmp_path) == tmp_path / "artifacts"


async def test_notices_and_dropped_lines_write_nothing(store: SqliteStore) -> None:
    e = execution()
    await created(store, e)
    events: list[Event] = [Notice(e.id, None, "info", "hello"), LinesDropped(e.id, 10)]
    await store.apply(events)
    await store.apply([])
    assert await store.count_log_lines(e.id) == 0



async def test_a_new_file_has_the_page_size_of_the_pragmas(store: SqliteStore) -> None:
    db = plain(store)
    try:
        assert db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
    finally:
        db.close()


# -- the store writer ------------------------------------------------------------------------------
async def test_the_store_writer_lingers_asleep_until_a_barrier_or_a_full_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine import store_writer
    from engine.events import LinesDropped
    from engine.hub import Hub

    # lingering for a minute: only the sink's wake-ups can end these waits in time
    monkeypatch.setattr(store_writer, "LINGER", 60.0)
    monkeypatch.setattr(store_writer, "LINGER_EVENTS", 3)
    applied: list[list[object]] = []
    wrote = asyncio.Event()

    class Recorder:
        async def apply(self, events: Sequence[object]) -> None:
            applied.append(list(events))
            wrote.set()

    hub = Hub()
    writer = store_writer.StoreWriter(Recorder(), hub.sink)  # type: ignore[arg-type]
    writer.start()
    try:
        first = LinesDropped(exec_id="e", count=1)
        await hub.publish(first)
        async with asyncio.timeout(5):
            await writer.barrier()
        assert applied == [[first]]
        wrote.clear()
        three = [LinesDropped(exec_id="e", count=n) for n in (2, 3, 4)]
        for event in three:
            await hub.publish(event)
        async with asyncio.timeout(5):
            await wrote.wait()
        assert applied[1] == three
    finally:
        await writer.stop()


async def test_a_batch_of_many_steps_reads_back_field_for_field(store: SqliteStore) -> None:
    """A table's rows go to SQLite as multi-row statements of at most SNAPSHOT_ROWS rows, then the
    rest (37) in one statement filled up to 64 rows with its last row again (MultiRow.padded), bound as
    parameters, a NUL in a name too. Each field reads back as it was written: text, integers,
    floats, booleans, None, metadata, times, in order of arrival (the later snapshot of a step wins),
    and the rows sent twice change nothing."""
    e = execution()
    b = branch_of(e)
    await created(store, e, b)
    many = 2 * SNAPSHOT_ROWS + 37
    steps = [
        replace(step_of(e, b, f"step {i}" + ("\x00nul" if i == SNAPSHOT_ROWS + 3 else ""), i + 1, StepKind.MARKER),
                description=f"ünï 😀 \u2028 {i}", exit_code=i - 5 if i % 3 else None, progress=i / 7,
                estimated_duration=i * 1.5 if i % 2 else None, stop_on_error=bool(i % 2),
                metadata={"n": i, "tags": ["a", "b"]}, cpu_percent=0.1 + i, rss_bytes=2**40 + i,
                status=StepStatus.RUNNING, started_at=T0 + timedelta(microseconds=i))
        for i in range(many)
    ]
    finished = [replace(s, status=StepStatus.COMPLETED, completed_at=T0 + timedelta(seconds=1)) for s in steps[::2]]
    await store.apply([*(StepAdded(s) for s in steps), *(StepFinished(s) for s in finished)])
    expected = {s.id: s for s in steps} | {s.id: s for s in finished}
    stored = {s.id: s for s in await store.get_steps(e.id) if s.parent_id == b.id}
    assert len(stored) == many
    assert stored == expected

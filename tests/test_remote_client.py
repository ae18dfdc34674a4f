"""`RemoteEngine` against the real thing: an `Engine` on a SQLite file served by the real
`ApiListener` on loopback (and once by a real `stepflow serve` process), read by a real client.
Nothing sleeps to wait for an event: every wait is an event awaited under `asyncio.timeout`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api_compat import ApiConfig, ApiListener, create_token
from api_compat.monitor.client import RemoteEngine
from api_compat.monitor.keys import WS_HUB
from engine.client import Subscription
from engine.engine import Engine
from engine.errors import Conflict, EngineError, InvalidRequest, NotFound
from engine.events import (
    ArtifactAdded,
    Event,
    ExecutionCreated,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    LinesLogged,
    Notice,
    StepAdded,
    StepFinished,
    StepStarted,
)
from engine.model import (
    AbortReason,
    ArtifactFilter,
    Execution,
    ExecutionFilter,
    ExecutionStatus,
    StepKind,
    StepStatus,
    Stream,
)
from engine.workflow.load import WorkflowError
from tests.engine_helpers import engine_at, finished, submit_command, submit_workflow
from tests.serve_process import stepflow_serve
from tests.servers import free_port

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent

MARKER_SCRIPT = textwrap.dedent("""\
    echo "before any step"
    echo "STEP_START:prepare"
    echo "preparing"
    echo "the report" > report.txt
    echo "ARTIFACT:report.txt:The report"
    echo "STEP_COMPLETE:prepare"
    echo "STEP_START:check"
    echo "::error::something is off"
    echo "careful" >&2
    sleep 0.3  # stderr is another pipe: let it be read while "check" is open
    echo "STEP_COMPLETE:check"
""")

BAD_WORKFLOW = "name: broken\nsteps:\n  - name: a\n    runn: echo hi\n"
GOOD_WORKFLOW = textwrap.dedent("""\
    name: two-steps
    steps:
      - name: first
        run: echo one
      - name: second
        run: echo two
        needs: [first]
""")


@dataclasses.dataclass
class Served:
    engine: Engine
    listener: ApiListener
    data_dir: Path

    @property
    def url(self) -> str:
        return self.listener.url


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **config: Any) -> AsyncIterator[Served]:
    data_dir = tmp_path / "data"
    async with engine_at(data_dir) as engine:
        api_config = ApiConfig.from_env({}, host="127.0.0.1", port=0, ws_port=0, data_dir=data_dir,
                                        shutdown_timeout=2.0, **config)
        listener = ApiListener(engine, api_config)
        await listener.start()
        try:
            yield Served(engine, listener, data_dir)
        finally:
            await listener.stop()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    # files of tmp_path may be run by path (a server started with `--workflows tmp_path`)
    async with serving(tmp_path, workflow_dirs=(tmp_path,)) as s:
        yield s


@pytest.fixture
async def remote(served: Served) -> AsyncIterator[RemoteEngine]:
    async with RemoteEngine(served.url, max_reconnect_delay=0.2) as client:
        yield client


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


async def events_until(sub: Subscription, done: Callable[[Event], bool], within: float = 30) -> list[Event]:
    """Every event up to and including the first for which `done(event)` is true."""
    seen: list[Event] = []
    async with asyncio.timeout(within):
        async for event in sub:
            seen.append(event)
            if done(event):
                return seen
    raise AssertionError(f"the subscription ended after {len(seen)} events")


def finish_of(execution_id: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, ExecutionFinished) and e.execution.id == execution_id


def texts(events: list[Event]) -> list[str]:
    return [text for e in events if isinstance(e, LinesLogged) for text in e.lines]


def first_index(events: list[Event], predicate: Callable[[Event], bool]) -> int:
    for i, e in enumerate(events):
        if predicate(e):
            return i
    raise AssertionError("no such event")


def step_event(kind: type, name: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, kind) and e.step.name == name  # type: ignore[attr-defined]


def line_event(text: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, LinesLogged) and text in e.lines


@contextlib.contextmanager
def log_records(logger: str, text: str) -> Iterator[asyncio.Event]:
    """An event set when `logger` logs a record containing `text` (records come on this loop)."""
    seen = asyncio.Event()

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if text in record.getMessage():
                seen.set()

    handler = Handler(logging.DEBUG)
    target = logging.getLogger(logger)
    old_level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)


def comparable(execution: Execution | None) -> Execution | None:
    # what the API does not carry: the workflow's source text, the owning engine process and the
    # admission fields (when it was admitted, its priority, the submitting surface, its labels)
    if execution is None:
        return None
    return dataclasses.replace(execution, workflow_source=None, owner=None, admitted_at=None, priority=0,
                               source="", labels={})


# -- events ----------------------------------------------------------------------------------------
async def test_a_marker_command_streams_its_events_in_order(served: Served, remote: RemoteEngine,
                                                           workdir: Path) -> None:
    sub = remote.subscribe()
    execution = await submit_command(remote, MARKER_SCRIPT, name="markers", cwd=str(workdir))
    assert execution.name == "markers" and execution.working_directory == str(workdir)
    got = [e for e in await events_until(sub, finish_of(execution.id)) if e.execution_id == execution.id]
    sub.close()

    assert isinstance(got[0], ExecutionCreated) and isinstance(got[1], ExecutionStarted)
    assert got[1].execution.status is ExecutionStatus.RUNNING and got[1].execution.started_at is not None
    final = got[-1]
    assert isinstance(final, ExecutionFinished) and final.execution.status is ExecutionStatus.COMPLETED
    assert final.execution.exit_code == 0 and final.execution.completed_at is not None
    assert final.execution.completed_at.utcoffset() is not None

    order = [
        first_index(got, lambda e: isinstance(e, StepStarted) and e.step.kind is StepKind.BRANCH),
        first_index(got, line_event("before any step")),
        first_index(got, step_event(StepAdded, "prepare")),
        first_index(got, line_event("preparing")),
        first_index(got, lambda e: isinstance(e, ArtifactAdded)),
        first_index(got, step_event(StepFinished, "prepare")),
        first_index(got, step_event(StepAdded, "check")),
        first_index(got, lambda e: isinstance(e, Notice) and "something is off" in e.message),
        first_index(got, step_event(StepFinished, "check")),
        len(got) - 1,
    ]
    assert order == sorted(order), [type(e).__name__ for e in got]
    added = next(e for e in got if isinstance(e, StepAdded) and e.step.name == "prepare")
    assert added.step.status is StepStatus.RUNNING and added.step.parent_id is not None
    done = next(e for e in got if isinstance(e, StepFinished) and e.step.name == "check")
    assert done.step.status is StepStatus.COMPLETED

    # one line per event, numbered as the engine numbered them, stream kept
    logged = [e for e in got if isinstance(e, LinesLogged)]
    stored = await served.engine.get_log_lines(execution.id)
    assert [(e.start_seq, e.stream, e.step_id, e.lines[0]) for e in logged] == \
        [(line.seq, line.stream, line.step_id, line.text) for line in stored]
    assert next(e for e in logged if e.lines == ("careful",)).stream is Stream.STDERR

    artifact = next(e for e in got if isinstance(e, ArtifactAdded)).artifact
    assert artifact.name == "The report" and artifact.file_name == "report.txt"
    assert await remote.read_artifact(artifact.id) == b"the report\n"


async def test_reads_match_the_local_engine(served: Served, remote: RemoteEngine, workdir: Path) -> None:
    local = served.engine
    first = await submit_command(local, MARKER_SCRIPT, name="markers", cwd=str(workdir), tags=["a", "b"],
                                       metadata={"project": "x", "n": 3})
    second = await submit_command(local, "echo hello; exit 3", name="failing", cwd=str(workdir))
    await finished(local, first)
    await finished(local, second)

    assert comparable(await remote.get_execution(first.id)) == comparable(await local.get_execution(first.id))
    assert await remote.get_execution("no-such-id") is None
    for flt in (ExecutionFilter(), ExecutionFilter(status=ExecutionStatus.FAILED), ExecutionFilter(text="mark"),
                ExecutionFilter(limit=1, offset=1)):
        rows, total = await remote.list_executions(flt)
        local_rows, local_total = await local.list_executions(flt)
        assert total == local_total
        assert [comparable(r) for r in rows] == [comparable(r) for r in local_rows]
    failed = await remote.get_execution(second.id)
    assert failed is not None and failed.status is ExecutionStatus.FAILED and failed.exit_code == 3

    steps = await remote.get_steps(first.id)
    assert steps == await local.get_steps(first.id)
    assert [s.name for s in steps if s.kind is StepKind.MARKER] == ["prepare", "check"]
    assert all(s.created_at.utcoffset() is not None for s in steps)
    assert await remote.get_steps("no-such-id") == []

    prepare = next(s for s in steps if s.name == "prepare")
    assert await remote.get_log_lines(first.id) == await local.get_log_lines(first.id)
    for kwargs in ({"step_ids": [prepare.id]}, {"after_seq": 1, "limit": 2}, {"newest_first": True, "limit": 3},
                   {"before_seq": 3}, {"step_ids": []}):
        assert await remote.get_log_lines(first.id, **kwargs) == await local.get_log_lines(first.id, **kwargs)
    assert await remote.count_log_lines(first.id) == await local.count_log_lines(first.id) > 0
    assert await remote.count_log_lines(first.id, step_ids=[prepare.id]) == \
        await local.count_log_lines(first.id, step_ids=[prepare.id])

    artifacts, total = await remote.list_artifacts(ArtifactFilter(execution_id=first.id))
    local_artifacts, local_total = await local.list_artifacts(ArtifactFilter(execution_id=first.id))
    assert (artifacts, total) == (local_artifacts, local_total) and total == 1
    assert await remote.read_artifact(artifacts[0].id) == await local.read_artifact(artifacts[0].id)
    with pytest.raises(NotFound):
        await remote.read_artifact("no-such-artifact")
    assert remote.description == served.url


async def test_log_lines_beyond_one_page(served: Served, remote: RemoteEngine) -> None:
    execution = await submit_command(served.engine, "seq 1 12345")
    await finished(served.engine, execution)
    lines = await remote.get_log_lines(execution.id)
    assert [line.text for line in lines] == [str(i) for i in range(1, 12346)]
    newest = await remote.get_log_lines(execution.id, newest_first=True, limit=10_500)
    assert [line.seq for line in newest] == list(range(12344, 12344 - 10_500, -1))
    assert await remote.count_log_lines(execution.id) == 12345


# -- commands --------------------------------------------------------------------------------------
async def test_cancel_refuse_delete_while_running_then_delete(served: Served, remote: RemoteEngine) -> None:
    sub = remote.subscribe()
    execution = await submit_command(remote, "echo started; sleep 60", name="sleeper")
    await events_until(sub, line_event("started"))
    with pytest.raises(Conflict) as refused:
        await remote.delete(execution.id)
    assert "cancel" in refused.value.message

    await remote.cancel(execution.id)
    got = await events_until(sub, finish_of(execution.id), within=20)
    final = got[-1].execution  # type: ignore[attr-defined]
    assert final.status is ExecutionStatus.CANCELLED and final.abort_reason is AbortReason.USER
    with pytest.raises(Conflict):
        await remote.cancel(execution.id)
    with pytest.raises(NotFound):
        await remote.cancel("no-such-id")

    await remote.delete(execution.id)
    deleted = await events_until(sub, lambda e: isinstance(e, ExecutionDeleted))
    assert deleted[-1].execution_id == execution.id
    assert await remote.get_execution(execution.id) is None
    assert await served.engine.get_execution(execution.id) is None
    with pytest.raises(NotFound):
        await remote.delete(execution.id)
    sub.close()


async def test_a_deletion_by_another_client_arrives_once(served: Served, remote: RemoteEngine) -> None:
    """The socket's `execution_deleted` (ours) becomes ExecutionDeleted; this client's own delete
    is told once, although both its REST answer and the socket say it."""
    sub = remote.subscribe()
    theirs = await submit_command(remote, "echo theirs")
    mine = await submit_command(remote, "echo mine")
    await events_until(sub, finish_of(theirs.id))
    await events_until(sub, finish_of(mine.id))
    await finished(served.engine, theirs)
    await finished(served.engine, mine)

    async with aiohttp.ClientSession() as other:  # another client of the same server
        async with other.delete(f"{served.url}/api/executions/{theirs.id}") as resp:
            assert resp.status == 200
    got = await events_until(sub, lambda e: isinstance(e, ExecutionDeleted))
    assert got[-1].execution_id == theirs.id

    await remote.delete(mine.id)
    # a marker after it: whatever the socket brought about `mine` came before this one finished
    last = await submit_command(remote, "echo last")
    got = await events_until(sub, finish_of(last.id))
    assert [e.execution_id for e in got if isinstance(e, ExecutionDeleted)] == [mine.id]
    assert [e.id for e in (await remote.list_executions(ExecutionFilter()))[0]] == [last.id]
    sub.close()


async def test_rerun(served: Served, remote: RemoteEngine, workdir: Path) -> None:
    sub = remote.subscribe()
    first = await submit_command(remote, "echo once", name="again", cwd=str(workdir), tags=["t"])
    await events_until(sub, finish_of(first.id))
    second = await remote.rerun(first.id)
    assert second.id != first.id and second.rerun_of == first.id
    assert second.name == "again" and second.tags == ["t"]
    got = await events_until(sub, finish_of(second.id))
    assert got[-1].execution.status is ExecutionStatus.COMPLETED  # type: ignore[attr-defined]
    assert "once" in texts([e for e in got if e.execution_id == second.id])
    with pytest.raises(NotFound):
        await remote.rerun("no-such-id")
    sub.close()


async def test_invalid_command_is_refused(remote: RemoteEngine) -> None:
    with pytest.raises(InvalidRequest):
        await submit_command(remote, "echo hi", markers="sloppy")
    with pytest.raises(InvalidRequest):
        await submit_command(remote, "   ")


async def test_what_the_monitor_api_cannot_carry_is_refused_not_dropped(remote: RemoteEngine) -> None:
    # a secret sent as a plain environment value would be neither masked nor kept from the store
    for fields in ({"secrets": ["TOKEN"], "env": {"TOKEN": "x"}}, {"priority": 5}, {"labels": {"job": "1"}}):
        with pytest.raises(InvalidRequest, match="cannot take"):
            await submit_command(remote, "echo hi", **fields)
    executions, _total = await remote.list_executions(ExecutionFilter())
    assert executions == [], "nothing was submitted"


async def test_workflows_by_text_and_by_path(remote: RemoteEngine, tmp_path: Path) -> None:
    with pytest.raises(WorkflowError) as by_text:
        await submit_workflow(remote, text=BAD_WORKFLOW)
    issues = by_text.value.issues
    assert [(i.line, i.column) for i in issues] == [(3, 5), (4, 5)]
    assert "unknown key 'runn'" in issues[1].message
    assert re.match(r"^<workflow>:3:5: ", by_text.value.message)

    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_WORKFLOW)
    with pytest.raises(WorkflowError) as by_path:
        await submit_workflow(remote, bad)
    assert by_path.value.issues[0].file == str(bad.resolve())
    assert str(by_path.value).startswith(f"{bad.resolve()}:3:5: ")
    assert isinstance(by_path.value, InvalidRequest)

    with pytest.raises(WorkflowError) as missing:
        await submit_workflow(remote, tmp_path / "nowhere.yaml")
    assert "cannot read the file" in missing.value.message

    good = tmp_path / "good.yaml"
    good.write_text(GOOD_WORKFLOW)
    sub = remote.subscribe()
    execution = await submit_workflow(remote, good, name="by path")
    assert execution.name == "by path" and execution.command == str(good.resolve())
    got = await events_until(sub, finish_of(execution.id))
    created = next(e for e in got if isinstance(e, ExecutionCreated))
    assert sorted(s.name for s in created.steps if s.kind is StepKind.WORKFLOW) == ["first", "second"]
    assert got[-1].execution.status is ExecutionStatus.COMPLETED  # type: ignore[attr-defined]
    assert got[-1].execution.completed_steps == 2  # type: ignore[attr-defined]
    assert texts([e for e in got if e.execution_id == execution.id]) == ["one", "two"]
    sub.close()


# -- connecting ------------------------------------------------------------------------------------
async def test_auth_needs_the_token(tmp_path: Path) -> None:
    async with serving(tmp_path, auth_enabled=True) as served:
        without = RemoteEngine(served.url)
        with pytest.raises(EngineError) as refused:
            await without.start()
        assert refused.value.title == "Cannot connect"
        assert served.url in refused.value.message and "token" in refused.value.message

        with pytest.raises(EngineError) as wrong:
            await RemoteEngine(served.url, token="not.a.token").start()
        assert wrong.value.title == "Cannot connect" and "refused the token" in wrong.value.message

        token = await asyncio.to_thread(create_token, served.data_dir)
        async with RemoteEngine(served.url, token=token) as remote:
            sub = remote.subscribe()  # the WebSocket carries the token too
            execution = await submit_command(remote, "echo authorized")
            got = await events_until(sub, finish_of(execution.id))
            assert "authorized" in texts(got)
            rows, _total = await remote.list_executions(ExecutionFilter())
            assert [r.id for r in rows] == [execution.id]


async def test_unreachable_server_fails_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with asyncio.timeout(5):
        with pytest.raises(EngineError) as failed:
            await RemoteEngine(url).start()
    assert failed.value.title == "Cannot connect" and url in failed.value.message


async def test_a_lost_server_is_a_clear_error(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        remote = RemoteEngine(served.url)
        await remote.start()
    try:
        async with asyncio.timeout(5):
            with pytest.raises(EngineError) as failed:
                await remote.list_executions(ExecutionFilter())
        assert failed.value.message.startswith(f"Cannot reach {served.url}")
    finally:
        await remote.close()


async def test_events_missed_while_the_socket_was_down_are_replayed(served: Served, remote: RemoteEngine,
                                                                    tmp_path: Path) -> None:
    go = tmp_path / "go"
    sub = remote.subscribe()
    execution = await submit_command(remote,
        f"echo before; while [ ! -e {go} ]; do sleep 0.02; done; echo after; echo STEP_START:late; "
        "echo STEP_COMPLETE:late", name="outage")
    await events_until(sub, line_event("before"))

    # drop the socket and refuse new ones while the execution goes on and ends, and another runs
    hub = served.listener.app[WS_HUB]  # type: ignore[index]
    hub.accepting = False
    with log_records("api_compat.monitor.client_events", "503") as refused:
        await hub.close_clients()
        async with asyncio.timeout(10):
            await refused.wait()  # the client tried again and was turned away
    assert not remote.connected
    go.touch()
    await finished(served.engine, await served.engine.get_execution(execution.id))  # type: ignore[arg-type]
    other = await submit_command(served.engine, "echo meanwhile", name="meanwhile")
    await finished(served.engine, other)
    hub.accepting = True

    got = await events_until(sub, finish_of(execution.id))
    mine = [e for e in got if e.execution_id == execution.id]
    assert "after" in texts(mine) and texts(mine).count("before") == 0
    assert any(isinstance(e, StepAdded) and e.step.name == "late" for e in mine)
    assert got[-1].execution.status is ExecutionStatus.COMPLETED  # type: ignore[attr-defined]
    more = got + await events_until(sub, finish_of(other.id))
    assert any(isinstance(e, ExecutionCreated) and e.execution.id == other.id for e in more)

    # and the socket is live again
    third = await submit_command(remote, "echo live again")
    assert "live again" in texts(await events_until(sub, finish_of(third.id)))
    sub.close()


async def test_close_ends_the_subscriptions(remote: RemoteEngine) -> None:
    sub = remote.subscribe()
    execution = await submit_command(remote, "echo x")
    await events_until(sub, finish_of(execution.id))
    await remote.close()
    async with asyncio.timeout(5):
        rest = [e async for e in sub]
    assert all(not isinstance(e, ExecutionStarted) for e in rest)


# -- a real `stepflow serve` process ----------------------------------------------------------------
async def test_against_stepflow_serve(tmp_path: Path, workdir: Path) -> None:
    async with stepflow_serve(tmp_path / "served", ROOT) as url:
        async with RemoteEngine(url) as remote:
            sub = remote.subscribe()
            execution = await submit_command(remote, MARKER_SCRIPT, cwd=str(workdir))
            got = await events_until(sub, finish_of(execution.id))
            assert got[-1].execution.status is ExecutionStatus.COMPLETED  # type: ignore[attr-defined]
            assert [s.name for s in await remote.get_steps(execution.id) if s.kind is StepKind.MARKER] == \
                ["prepare", "check"]
            lines = await remote.get_log_lines(execution.id)
            assert [line.text for line in lines] == texts([e for e in got if e.execution_id == execution.id])
            assert await remote.count_log_lines(execution.id) == len(lines)

"""Far jumps in a log filtered to a step: a scrollbar drag to the middle of a big step's lines, home,
or a search hit far away is one read of the store (`get_log_lines(offset=...)`), not a walk in
5,000-line reads; the same over `--connect` (the API's `offset`). And with marker lines hidden
(`m`), the scrollbar's end is the end of the log, and a key press moves one line that shows."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api_compat import ApiConfig, ApiListener
from api_compat.monitor.client import RemoteEngine
from engine.events import ExecutionCreated, ExecutionFinished, ExecutionStarted, LinesLogged
from engine.model import Execution, ExecutionStatus, Step, StepKind, Stream
from stepflow_tui.log_window import LogWindow
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.widgets.execution_list import ExecutionList
from stepflow_tui.widgets.log_view import LogView
from storage import SqliteStore
from tests.engine_helpers import engine_at, finished, submit_command
from tests.tui.conftest import make_app, wait_for
from tests.tui.pilot_steps import open_selected
from tests.tui.screen_text import screen_text
from tests.tui.store_client import StoreClient

T0 = datetime(2025, 3, 14, 9, 0, tzinfo=UTC)
#: lines in runs of RUN, taking turns: step a, step b, the branch itself
LINES, RUN = 150_000, 50


def owner(seq: int) -> str:
    return ("a", "b", "br")[(seq // RUN) % 3]


def nth_of_a(n: int) -> int:
    """The seq of step a's n-th line (0-based)."""
    return (n // RUN) * RUN * 3 + n % RUN


class CountingClient(StoreClient):
    """The real store, with the log reads it was asked for recorded."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.reads: list[dict] = []

    async def get_log_lines(self, execution_id: str, **kw):
        self.reads.append(kw)
        return await super().get_log_lines(execution_id, **kw)


async def seed_big(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    ex = Execution(id="big", name="big-build", command="./big.sh", created_at=T0, targets=["local"])
    steps = (
        Step(id="br", execution_id="big", name="local", kind=StepKind.BRANCH, created_at=T0),
        *(
            Step(
                id=step_id,
                execution_id="big",
                name=name,
                kind=StepKind.WORKFLOW,
                parent_id="br",
                index=index,
                created_at=T0,
            )
            for index, (step_id, name) in enumerate([("a", "compile"), ("b", "test")], start=1)
        ),
    )
    running = dataclasses.replace(ex, status=ExecutionStatus.RUNNING, started_at=T0)
    events = [ExecutionCreated(ex, steps), ExecutionStarted(running)]
    events += [
        LinesLogged(
            "big", owner(s), Stream.STDOUT, s, T0, tuple(f"{owner(s)} line {s + i}" for i in range(RUN))
        )
        for s in range(0, LINES, RUN)
    ]
    events.append(
        ExecutionFinished(dataclasses.replace(running, status=ExecutionStatus.COMPLETED, completed_at=T0))
    )
    await store.apply(events)
    await store.close()


async def filter_to(pilot, name: str) -> LogView:
    """Open the (only) execution, move the tree's cursor to `name` with keys, enter: the log is filtered."""
    screen = await open_selected(pilot)
    await wait_for(pilot, lambda: screen.step_tree.steps, what="the tree")
    await pilot.press("T")
    tree = screen.step_tree
    while tree.cursor_node is None or tree.cursor_node.data != next(
        s.id for s in tree.steps.values() if s.name == name
    ):
        await pilot.press("down")
    await pilot.press("enter")
    log = screen.log_view
    await wait_for(
        pilot,
        lambda: log.window is not None and log.window.filtered and log.window.opened,
        what="the filtered log",
    )
    await pilot.press("l")  # the keys go to the log
    assert log.has_focus
    return log


@pytest.mark.xdist_group("measured")  # timed or measured: one at a time (see pyproject.toml)
async def test_a_far_jump_in_a_filtered_log_is_one_read(tmp_path: Path):
    path = tmp_path / "big.sqlite"
    await seed_big(path)
    client = CountingClient(SqliteStore(path))
    app = make_app(client)
    async with app.run_test(size=(100, 30)) as pilot:
        log = await filter_to(pilot, "compile")
        assert log.total == LINES // 3
        await wait_for(
            pilot, lambda: f"a line {nth_of_a(LINES // 3 - 1)}" in screen_text(app), what="the tail"
        )

        # the scrollbar dragged to the middle of step a's 50,000 lines
        row = 25_000 + 100
        client.reads.clear()
        started = time.perf_counter()
        log.scroll_to(y=row, animate=False, force=True)
        want = f"a line {nth_of_a(row)}"
        await wait_for(pilot, lambda: screen_text(app).splitlines()[4].endswith(want), what="the middle")
        took = time.perf_counter() - started
        assert len(client.reads) == 1 and client.reads[0]["offset"] == 25_088, client.reads  # block 49 of 512
        assert took < 1.0

        # home: the first lines, one read
        client.reads.clear()
        await pilot.press("home")
        await wait_for(pilot, lambda: "a line 0" in screen_text(app), what="the top")
        assert len(client.reads) == 1

        # a search hit 40,000 lines away: the search reads forward, then the hit's block is one read
        await pilot.press("slash", *f"a line {nth_of_a(40_000)}", "enter")
        await wait_for(pilot, lambda: log.match_row == 40_000, what="the match")
        reads = len(client.reads)
        await wait_for(
            pilot, lambda: f"a line {nth_of_a(40_000)}" in screen_text(app), what="the match shown"
        )
        assert len(client.reads) - reads <= 1
        assert "match at line 40,001" in log.status_text()
    await client.aclose()


async def test_the_window_reads_any_far_block_of_a_filter_in_one_query(tmp_path: Path):
    path = tmp_path / "big.sqlite"
    await seed_big(path)
    client = CountingClient(SqliteStore(path))
    window = LogWindow(client, "big", ["a", "br"])
    await window.open()
    assert window.total == 100_000
    for k in (97, 3, 150, 60):  # any order: each one read, right lines
        client.reads.clear()
        await window.fetch_block(k)
        assert len(client.reads) == 1, client.reads
        first = window.line(k * 512)
        both = [s for s in range(LINES) if owner(s) in ("a", "br")]
        assert first.seq == both[k * 512] and first.text == f"{owner(first.seq)} line {first.seq}"
    await client.aclose()


async def test_remote_reads_take_the_offset_to_the_server(tmp_path: Path):
    data_dir = tmp_path / "data"
    async with engine_at(data_dir) as engine:
        config = ApiConfig.from_env(
            {}, host="127.0.0.1", port=0, ws_port=0, data_dir=data_dir, shutdown_timeout=2.0
        )
        listener = ApiListener(engine, config)
        await listener.start()
        try:
            script = "echo STEP_START:a; seq 1 12000; echo STEP_COMPLETE:a; echo STEP_START:b; seq 1 300"
            execution = await submit_command(engine, script)
            await finished(engine, execution)
            a = next(s for s in await engine.get_steps(execution.id) if s.name == "a")
            async with RemoteEngine(listener.url, max_reconnect_delay=0.2) as remote:
                for kwargs in (
                    {"offset": 11_000, "limit": 5},
                    {"offset": 500},  # all: two pages, one offset
                    {"offset": 3, "limit": 4, "newest_first": True},
                ):
                    got = await remote.get_log_lines(execution.id, step_ids=[a.id], **kwargs)
                    assert got == await engine.get_log_lines(execution.id, step_ids=[a.id], **kwargs)
                    assert got
                assert (await remote.get_log_lines(execution.id, step_ids=[a.id], offset=500))[
                    0
                ].text == "500"
        finally:
            await listener.stop()


def marker_heavy() -> list[str]:
    # 40 lines that show, each followed by 5 marker lines; then 200 more marker lines at the end
    out = []
    for i in range(40):
        out.append(f"work {i}")
        out += [f"STEP_PROGRESS:{i * 5 + j}/200" for j in range(5)]
    return out + [f"::debug::trailing {i}" for i in range(200)]


async def test_with_markers_hidden_the_scrollbar_end_is_the_end_of_the_log(tmp_path: Path):
    store = SqliteStore(tmp_path / "m.sqlite")
    client = StoreClient(store)
    texts = marker_heavy()
    ex = Execution(id="m", name="markers", command="./m.sh", created_at=T0, targets=["local"])
    await client.publish(ExecutionCreated(ex), LinesLogged("m", None, Stream.STDOUT, 0, T0, tuple(texts)))
    app = make_app(client)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one(ExecutionList).loaded, what="list")
        await pilot.press("enter")
        screen = await wait_for(
            pilot, lambda: isinstance(app.screen, ExecutionScreen) and app.screen, what="view"
        )
        log = screen.log_view
        await wait_for(pilot, lambda: log.total == len(texts), what="the log")
        assert not log.show_markers  # hidden at first
        height = log.scrollable_content_region.height

        def shown() -> list[str]:
            return [
                line.strip()
                for line in log.render_lines(log.region.reset_offset)[:height]
                for line in ["".join(seg.text for seg in line)]
            ]

        # following: the last lines that show fill the pane, down to its last row
        await wait_for(pilot, lambda: shown()[-1] == "work 39", what="the tail without markers")
        assert shown() == [f"work {i}" for i in range(40 - height, 40)]
        # the scrollbar dragged to its end shows the same full pane, not one line and blank rows
        await pilot.press("home")
        await wait_for(pilot, lambda: shown()[0] == "work 0", what="the top")
        log.scroll_to(y=log.max_scroll_y, animate=False, force=True)
        await wait_for(pilot, lambda: shown()[-1] == "work 39", what="the end by the scrollbar")
        assert "" not in shown()
        # a key press moves one line that shows, whatever hidden lines lie between
        await pilot.press("home")
        await wait_for(pilot, lambda: shown()[0] == "work 0", what="the top")
        for i in (1, 2, 3):
            await pilot.press("down")
            await wait_for(pilot, lambda i=i: shown()[0] == f"work {i}", what=f"work {i} on top")
        await pilot.press("up")
        await wait_for(pilot, lambda: shown()[0] == "work 2", what="back up one")
        # a page keeps one line of the old page
        await pilot.press("pagedown")
        await wait_for(pilot, lambda: shown()[0] == f"work {2 + height - 1}", what="a page down")
        await pilot.press("pageup")
        await wait_for(pilot, lambda: shown()[0] == "work 2", what="a page up")
    await client.aclose()

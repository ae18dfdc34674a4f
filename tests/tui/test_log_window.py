"""The virtual log window: any row of a filtered or unfiltered view, fetched in any order, is the
right line; memory stays bounded; search finds rows forwards and backwards."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.events import ExecutionCreated, LinesLogged
from engine.model import Execution, Step, StepKind, Stream
from stepflow_tui.log_window import LogWindow, strip_ansi
from storage import SqliteStore
from tests.tui.store_client import StoreClient

T = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
async def make_client(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[StoreClient]]]:
    """Makes clients over a new SQLite file each (see `client_over`); closes them at the end."""
    made: list[StoreClient] = []

    async def make(n: int = 6000) -> StoreClient:
        made.append(await client_over(tmp_path / f"db{len(made)}.sqlite", n))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


async def client_over(path: Path, n: int) -> StoreClient:
    """Execution "e" with steps a, b and c taking turns at logging, in a SQLite file at `path`."""
    client = StoreClient(SqliteStore(path))
    steps = tuple(Step(id=s, execution_id="e", name=s, kind=StepKind.WORKFLOW, index=i, created_at=T)
                  for i, s in enumerate("abc"))
    events = [ExecutionCreated(Execution(id="e", name="e", created_at=T), steps)]
    seq = 0
    rng = random.Random(7)
    while seq < n:
        step = rng.choice(["a", "b", "c"])
        count = rng.randint(1, 40)
        lines = tuple(f"{step} line {seq + i}" for i in range(count))
        events.append(LinesLogged("e", step, Stream.STDOUT, seq, T, lines))
        seq += count
    await client.publish(*events)
    return client


async def expected(client: StoreClient, step_ids=None) -> list[str]:
    return [ln.text for ln in await client.get_log_lines("e", step_ids=step_ids)]


async def check_random_access(client: StoreClient, step_ids) -> None:
    want = await expected(client, step_ids)
    window = LogWindow(client, "e", step_ids, block=64, max_blocks=8)
    await window.open()
    assert window.total == len(want)
    assert window.line(len(want) - 1).text == want[-1]  # the tail is there at once
    rng = random.Random(1)
    for _ in range(60):
        row = rng.randrange(len(want))
        for k in window.blocks_missing(row, row):
            await window.fetch_block(k)
        assert window.line(row).text == want[row], row
        assert window.loaded_lines <= 64 * 8


async def test_unfiltered_rows_are_seqs(make_client):
    client = await make_client()
    await check_random_access(client, None)


async def test_filtered_rows_any_order(make_client):
    client = await make_client()
    await check_random_access(client, ["a"])
    await check_random_access(client, ["b", "c"])


async def test_open_reads_only_the_tail(make_client):
    client = await make_client(20000)
    before = client.queries
    window = LogWindow(client, "e", None, block=256)
    await window.open()
    assert client.queries - before <= 2
    assert window.loaded_lines == 20000 - (20000 // 256) * 256 or window.loaded_lines <= 256


async def test_search_forward_backward(make_client):
    client = await make_client()
    window = LogWindow(client, "e", ["a"], block=64)
    await window.open()
    want = await expected(client, ["a"])
    target = next(i for i, t in enumerate(want) if t.endswith(" 3000")) if any(
        t.endswith(" 3000") for t in want) else len(want) // 2
    needle = want[target].split(" ", 1)[1]
    row = await window.search(needle, -1, forward=True)
    assert row is not None and want[row] == want[target] or needle in want[row]
    back = await window.search(want[5][2:], window.total, forward=False)
    assert back is not None and want[5][2:] in want[back]


async def test_live_lines_fill_by_seq_and_filtered_reads_tail(make_client):
    client = await make_client(100)
    window = LogWindow(client, "e", None)
    await window.open()
    n = window.total
    lines = LinesLogged("e", "a", Stream.STDOUT, n + 5, T, ("x",)).log_lines()
    assert window.add_live(lines)
    # placed by seq; the gap (lines this subscriber lost) is fetched from the store later
    assert window.total == n + 6 and window.line(n + 5).text == "x" and window.line(n + 1) is None
    assert window.blocks_missing(n, n + 5)
    filtered = LogWindow(client, "e", ["a"])
    await filtered.open()
    count = filtered.total
    new = LinesLogged("e", "a", Stream.STDOUT, n, T, ("new a",))
    await client.publish(new)
    filtered.add_live(new.log_lines())
    assert filtered.tail_dirty
    assert await filtered.fetch_tail()
    assert filtered.total == count + 1 and filtered.line(count).text == "new a"


def test_strip_ansi():
    assert strip_ansi("\x1b[1;31mred\x1b[0m plain") == "red plain"

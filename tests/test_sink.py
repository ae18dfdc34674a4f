"""The store writer's sink holds back log lines beyond its bound until the writer commits some
(issue 9, item 4): the readers of the commands' pipes wait instead of piling up what a crash loses."""

from __future__ import annotations

import asyncio

from engine.events import ExecutionDeleted, LinesLogged
from engine.hub import Sink
from engine.model import Stream, utcnow


def lines(n: int, start: int = 0) -> LinesLogged:
    return LinesLogged("e", None, Stream.STDOUT, start, utcnow(), tuple(f"line {i}" for i in range(n)))


async def test_lines_wait_for_room_and_other_events_do_not() -> None:
    sink = Sink(maxsize=100, max_uncommitted_lines=1_000)
    await sink.put(lines(1_000))
    blocked = asyncio.create_task(sink.put(lines(10, 1_000)))
    await asyncio.sleep(0)  # it had its chance to go in
    assert not blocked.done() and sink.qsize() == 1
    async with asyncio.timeout(5):
        await sink.put(ExecutionDeleted("other"))  # not a line: no wait
    taken = sink.get_nowait()
    assert isinstance(taken, LinesLogged)
    await asyncio.sleep(0)
    assert not blocked.done()  # taken is not written: still uncommitted
    sink.committed(len(taken.lines))
    async with asyncio.timeout(5):
        await blocked
    assert sink.uncommitted_lines == 10

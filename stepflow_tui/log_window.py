"""A virtual window over one execution's stored log: rows are fetched from the engine in blocks,
on demand, and only a bounded number of blocks stay in memory.

Without a step filter a row number is the line's sequence number (the engine numbers an execution's
lines 0, 1, 2 ... and the store loses none), so any row can be fetched directly. With a step filter
rows are not seqs; the window then keeps the seqs at block boundaries it has seen and fetches a block
from its neighbour's boundary (forwards or backwards, a range read on the index), or, far from
anything known, as the n-th lines of the filtered set (`offset`): one read either way.

Nothing here touches Textual: the widget asks `rows_missing()`, awaits `fetch_block()` in a worker,
and reads `line(row)` when it paints.

A block keeps its lines as plain tuples of strings, numbers and a datetime, which the garbage
collector stops tracking at its first pass: tens of thousands of cached lines (a followed tail
fills the blocks at 20,000 lines/s) then cost a full collection nothing, where as `LogLine`
objects they were a third of what it walked. `line(row)` makes the `LogLine` when asked.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime

from engine.client import EngineClient
from engine.model import LogLine, Stream

BLOCK = 512
MAX_BLOCKS = 64
#: lines read per query while searching
SEARCH_CHUNK = 5000
TAIL_CHUNK = 5000

_STREAMS = tuple(Stream)
_STREAM_INDEX = {stream: i for i, stream in enumerate(_STREAMS)}
#: a line as a block keeps it: (seq, step id, index in _STREAMS, timestamp, text)
_Row = tuple[int, str | None, int, datetime, str]

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text) if "\x1b" in text else text


class LogWindow:
    def __init__(
        self,
        client: EngineClient,
        execution_id: str,
        step_ids: Sequence[str] | None = None,
        *,
        block: int = BLOCK,
        max_blocks: int = MAX_BLOCKS,
    ) -> None:
        self.client = client
        self.execution_id = execution_id
        self.step_ids = list(step_ids) if step_ids is not None else None
        self._step_set = set(self.step_ids) if self.step_ids is not None else None
        self.block = block
        self.max_blocks = max_blocks
        self.total = 0
        #: block number -> rows of that block (None where not known yet)
        self._blocks: OrderedDict[int, list[_Row | None]] = OrderedDict()
        #: filtered mode: row -> seq at block boundaries (rows k*block-1 and k*block)
        self._boundary: dict[int, int] = {}
        #: seq of the last row, -1 when empty
        self.last_seq = -1
        self.opened = False
        #: filtered mode: new lines exist in the store beyond last_seq
        self.tail_dirty = False

    @property
    def filtered(self) -> bool:
        return self.step_ids is not None

    def matches(self, step_id: str | None) -> bool:
        return self._step_set is None or step_id in self._step_set

    # -- opening ------------------------------------------------------------------------------
    async def open(self) -> None:
        """Count the lines and load the tail block: enough to show the end at once."""
        if not self.filtered:
            # rows are seqs: the newest lines give the count too (no COUNT over a million rows)
            tail = await self.client.get_log_lines(self.execution_id, limit=self.block, newest_first=True)
            for line in reversed(tail):
                self._put(line.seq, line)
            self.opened = True
            return
        total = await self.client.count_log_lines(self.execution_id, step_ids=self.step_ids)
        self.total = max(total, self.total)
        if self.total:
            await self.fetch_block((self.total - 1) // self.block)
        self.opened = True

    # -- reading --------------------------------------------------------------------------------
    def line(self, row: int) -> LogLine | None:
        block = self._blocks.get(row // self.block)
        if block is None:
            return None
        self._blocks.move_to_end(row // self.block)
        packed = block[row % self.block]
        if packed is None:
            return None
        seq, step_id, stream, timestamp, text = packed
        return LogLine(self.execution_id, step_id, seq, _STREAMS[stream], timestamp, text)

    def _has(self, row: int) -> bool:
        block = self._blocks.get(row // self.block)
        return block is not None and block[row % self.block] is not None

    def blocks_missing(self, first_row: int, last_row: int) -> list[int]:
        """Blocks that rows first_row..last_row need and that are not (fully) loaded."""
        if self.total == 0:
            return []
        last_row = min(last_row, self.total - 1)
        out = []
        for k in range(max(first_row, 0) // self.block, last_row // self.block + 1):
            block = self._blocks.get(k)
            if block is None:
                out.append(k)
                continue
            end = min(self.block, self.total - k * self.block)
            if any(block[i] is None for i in range(end)):
                out.append(k)
        return out

    def seq_of_row(self, row: int) -> int | None:
        if not self.filtered:
            return row
        line = self.line(row)
        if line is not None:
            return line.seq
        return self._boundary.get(row)

    async def fetch_block(self, k: int) -> None:
        start = k * self.block
        if start >= self.total and not (start == 0 and self.total == 0):
            return
        count = min(self.block, self.total - start)
        if not self.filtered:
            lines = await self.client.get_log_lines(
                self.execution_id, after_seq=start - 1, before_seq=start + count, limit=count
            )
            self._store_rows(start, lines, by_seq=True)
            return
        self._store_rows(start, await self._fetch_filtered(k, count), by_seq=False)

    async def _fetch_filtered(self, k: int, count: int) -> list[LogLine]:
        start = k * self.block
        ex = self.execution_id
        if start == 0:
            return await self.client.get_log_lines(ex, step_ids=self.step_ids, limit=count)
        if start - 1 in self._boundary:
            return await self.client.get_log_lines(
                ex, step_ids=self.step_ids, after_seq=self._boundary[start - 1], limit=count
            )
        end = start + count
        if end >= self.total:
            # the tail: the newest `count` lines (plus one, for the boundary before them)
            before = self.last_seq + 1 if self.last_seq >= 0 else None
            lines = await self.client.get_log_lines(
                ex, step_ids=self.step_ids, before_seq=before, limit=count + 1, newest_first=True
            )
            lines.reverse()
            if len(lines) == count + 1:
                self._boundary[start - 1] = lines[0].seq
                lines = lines[1:]
            return lines
        if end in self._boundary:
            lines = await self.client.get_log_lines(
                ex, step_ids=self.step_ids, before_seq=self._boundary[end], limit=count + 1,
                newest_first=True,
            )
            lines.reverse()
            if len(lines) == count + 1:
                self._boundary[start - 1] = lines[0].seq
                lines = lines[1:]
            return lines
        # far from any known seq (a jump, a scrollbar drag): the store skips `start` lines itself
        return await self.client.get_log_lines(ex, step_ids=self.step_ids, offset=start, limit=count)

    async def seq_at(self, row: int) -> int | None:
        """The seq of a row, read from the store (one line, by offset) when not known here."""
        seq = self.seq_of_row(row)
        if seq is None and 0 <= row < self.total:
            lines = await self.client.get_log_lines(self.execution_id, step_ids=self.step_ids, offset=row, limit=1)
            seq = lines[0].seq if lines else None
        return seq

    def _store_rows(self, start: int, lines: Sequence[LogLine], *, by_seq: bool) -> None:
        for i, line in enumerate(lines):
            self._put(line.seq if by_seq else start + i, line)

    def _put(self, row: int, line: LogLine) -> None:
        k, i = divmod(row, self.block)
        block = self._blocks.get(k)
        if block is None:
            block = [None] * self.block
            self._blocks[k] = block
            self._evict(keep=k)
        block[i] = (line.seq, line.step_id, _STREAM_INDEX[line.stream], line.timestamp, line.text)
        if self.filtered and i in (0, self.block - 1):
            self._boundary[row] = line.seq
        if row >= self.total:
            self.total = row + 1
        if row == self.total - 1:
            self.last_seq = max(self.last_seq, line.seq)

    def _evict(self, keep: int) -> None:
        tail = (self.total - 1) // self.block if self.total else 0
        while len(self._blocks) > self.max_blocks:
            for k in self._blocks:
                if k not in (keep, tail):
                    del self._blocks[k]
                    break
            else:  # pragma: no cover - max_blocks >= 2
                return

    @property
    def loaded_lines(self) -> int:
        return sum(1 for b in self._blocks.values() for x in b if x is not None)

    # -- live ----------------------------------------------------------------------------------
    def add_live(self, lines: Sequence[LogLine]) -> bool:
        """New lines from an event. Returns True when the view changed (unfiltered mode places
        them by seq at once; filtered mode marks the tail to be read from the store)."""
        if not self.filtered:
            if not lines:
                return False
            for line in lines:
                if line.seq > self.last_seq or not self._has(line.seq):
                    self._put(line.seq, line)
            return True
        if any(self.matches(line.step_id) for line in lines):
            self.tail_dirty = True
        return False

    def add_dropped(self) -> None:
        """Some live lines were lost for this subscriber: the store has them."""
        self.tail_dirty = True

    async def fetch_tail(self) -> bool:
        """Read lines after the last known one from the store. Returns True if rows were added."""
        if not self.opened:
            return False
        self.tail_dirty = False
        added = False
        for _ in range(20):
            lines = await self.client.get_log_lines(
                self.execution_id, step_ids=self.step_ids, after_seq=self.last_seq, limit=TAIL_CHUNK
            )
            if not lines:
                break
            added = True
            if self.filtered:
                self._store_rows(self.total, lines, by_seq=False)
            else:
                self._store_rows(0, lines, by_seq=True)
            if len(lines) < TAIL_CHUNK:
                break
        else:
            # far behind: recount, the tail is read on demand
            self.total = max(self.total, await self.client.count_log_lines(
                self.execution_id, step_ids=self.step_ids))
        return added

    # -- search --------------------------------------------------------------------------------
    async def search(self, needle: str, from_row: int, *, forward: bool = True) -> int | None:
        """The first row after (or before) `from_row` whose text contains `needle` (case-insensitive),
        reading the store in chunks. Does not wrap."""
        if not needle or self.total == 0:
            return None
        needle = needle.lower()
        if forward:
            row = from_row
            after = -1 if row < 0 else await self.seq_at(row)
            if after is None:
                return None
            while True:
                lines = await self.client.get_log_lines(
                    self.execution_id, step_ids=self.step_ids, after_seq=after, limit=SEARCH_CHUNK
                )
                if not lines:
                    return None
                for line in lines:
                    row = line.seq if not self.filtered else row + 1
                    if needle in strip_ansi(line.text).lower():
                        return row
                after = lines[-1].seq
        row = from_row
        before: int | None  # None: from the end
        if row >= self.total:
            before = None
            row = self.total
        else:
            before = await self.seq_at(row)
            if before is None:
                return None
        while True:
            lines = await self.client.get_log_lines(
                self.execution_id, step_ids=self.step_ids, before_seq=before, limit=SEARCH_CHUNK,
                newest_first=True,
            )
            if not lines:
                return None
            for line in lines:
                row = line.seq if not self.filtered else row - 1
                if needle in strip_ansi(line.text).lower():
                    return row
            before = lines[-1].seq

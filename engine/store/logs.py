"""The store's protocol for reading log lines, and which lines a read selects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict, Unpack

from engine.model import LogLine


class LogSelection(TypedDict, total=False):
    """Which lines of an execution a read returns (every reader takes these as keywords):
    after_seq < seq < before_seq, of `step_ids` only if given, in seq order or newest first,
    skipping the first `offset`, at most `limit`."""

    step_ids: Sequence[str] | None
    after_seq: int
    before_seq: int | None
    limit: int | None
    newest_first: bool
    offset: int


@dataclass(frozen=True, slots=True)
class LogRange:
    """A `LogSelection` with its defaults filled in."""

    step_ids: Sequence[str] | None = None
    after_seq: int = -1
    before_seq: int | None = None
    limit: int | None = None
    newest_first: bool = False
    offset: int = 0

    @classmethod
    def of(cls, selection: LogSelection) -> LogRange:
        return cls(**selection)


class LogReads(Protocol):
    async def get_log_lines(
        self,
        execution_id: str,
        **selection: Unpack[LogSelection],
    ) -> list[LogLine]:
        """Lines with after_seq < seq < before_seq, in seq order (or reversed when newest_first),
        skipping the first `offset` of them."""

    async def count_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None) -> int: ...

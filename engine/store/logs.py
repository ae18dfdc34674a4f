"""The store's protocol for reading log lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.model import LogLine


class LogReads(Protocol):
    async def get_log_lines(
        self,
        execution_id: str,
        *,
        step_ids: Sequence[str] | None = None,
        after_seq: int = -1,
        before_seq: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        offset: int = 0,
    ) -> list[LogLine]:
        """Lines with after_seq < seq < before_seq, in seq order (or reversed when newest_first),
        skipping the first `offset` of them."""

    async def count_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None) -> int: ...

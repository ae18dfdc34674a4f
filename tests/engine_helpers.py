"""Shared helpers for engine tests: a real engine on a real SQLite file in a temp folder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from engine.engine import Engine, EngineConfig
from engine.model import Execution, Step
from storage import SqliteStore
from storage.paths import database_path


@contextlib.asynccontextmanager
async def engine_at(data_dir: Path, *, kill_grace: float = 1.0) -> AsyncIterator[Engine]:
    engine = Engine(SqliteStore(database_path(data_dir)), data_dir, EngineConfig(kill_grace=kill_grace,
                                                                                 shutdown_grace=5))
    await engine.start()
    try:
        yield engine
    finally:
        await engine.shutdown()


async def finished(engine: Engine, execution: Execution, timeout: float = 30) -> Execution:
    async with asyncio.timeout(timeout):
        return await engine.wait(execution.id)


def by_name(steps: list[Step]) -> dict[str, Step]:
    return {s.name: s for s in steps}


async def all_text(engine: Engine, execution_id: str) -> list[str]:
    return [line.text for line in await engine.get_log_lines(execution_id)]

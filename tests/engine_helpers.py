"""Shared helpers for engine tests: a real engine on a real SQLite file in a temp folder."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from engine.client import EngineClient
from engine.engine import Engine, EngineConfig
from engine.model import Execution, ExecutionKind, Step
from engine.submission import SubmitRequest
from storage import SqliteStore
from storage.paths import database_path

S = TypeVar("S")


@contextlib.asynccontextmanager
async def opened_store(store: S) -> AsyncIterator[S]:
    """The store (any store: it has `open` and `close`), opened, and closed after."""
    await store.open()  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        await store.close()  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def engine_at(data_dir: Path, *, kill_grace: float = 1.0, max_running: int = 32) -> AsyncIterator[Engine]:
    engine = Engine(SqliteStore(database_path(data_dir)), data_dir, EngineConfig(kill_grace=kill_grace,
                                                                                 shutdown_grace=5,
                                                                                 max_running=max_running))
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


async def submit_command(client: EngineClient, command: str | Sequence[str], *, target: str = "local",
                         **fields: Any) -> Execution:
    """`client.submit` of a command request (the fields of `SubmitRequest`; `target` for `targets`)."""
    return await client.submit(SubmitRequest(kind=ExecutionKind.COMMAND, command=command, targets=[target], **fields))


async def submit_workflow(client: EngineClient, path: str | Path | None = None, *, text: str | None = None,
                          targets: Sequence[str] | None = None, **fields: Any) -> Execution:
    """`client.submit` of a workflow request: a file, or its text."""
    return await client.submit(SubmitRequest(kind=ExecutionKind.WORKFLOW, workflow_path=path, workflow_text=text,
                                             targets=targets or (), **fields))

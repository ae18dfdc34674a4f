"""Going under SQLAlchemy to aiosqlite's own connection: for the hot path (log lines) and for the
statements that must run outside a transaction (a WAL checkpoint)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

import aiosqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def driver_connection(conn: AsyncConnection) -> aiosqlite.Connection:
    """The aiosqlite connection behind `conn`: same SQLite connection, so same transaction."""
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, aiosqlite.Connection):
        raise TypeError(f"expected an aiosqlite connection, got {type(driver).__name__}")
    return driver


T = TypeVar("T")


async def run_on_driver_thread(driver: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """`fn(sqlite3_connection, *args)` on the connection's own thread, as one call: for work of
    many statements (a batch's steps and log lines), which as aiosqlite calls would be a round
    trip between the threads each. aiosqlite runs its own methods so (`Connection._execute`);
    the statements run in whatever transaction the connection is in."""
    raw: sqlite3.Connection = driver._conn  # noqa: SLF001 - see the docstring
    return await driver._execute(fn, raw, *args)  # noqa: SLF001

"""Going under SQLAlchemy to aiosqlite's own connection: for the hot path (log lines) and for the
statements that must run outside a transaction (a WAL checkpoint)."""

from __future__ import annotations

import aiosqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def driver_connection(conn: AsyncConnection) -> aiosqlite.Connection:
    """The aiosqlite connection behind `conn`: same SQLite connection, so same transaction."""
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, aiosqlite.Connection):
        raise TypeError(f"expected an aiosqlite connection, got {type(driver).__name__}")
    return driver

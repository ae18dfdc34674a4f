"""The store opened for reading alone, synchronously: what `stepflow ls`, `show` and `logs` read
through. sqlite3 and the plain SQL of storage.queries, nothing else: no SQLAlchemy (~0.18 s to
import, more than the whole start-up budget of those commands, issue 16), no asyncio, no Alembic.

Opening checks the file's schema revision with one SELECT. A file at this stepflow's revision is
read as it is; a new or older one is brought to it once (storage.schema, as the engine's store does:
a new file with sqlite3, an older one through SQLAlchemy and Alembic); one a newer stepflow wrote is
refused (`SchemaTooNew`). The connection reads
the WAL like any other: it sees every transaction a running engine has committed. It never writes
(`query_only`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from engine.model import Artifact, ArtifactFilter, Execution, ExecutionFilter, LogLine, Step
from storage import pragmas, queries
from storage.schema import HEAD, bring_file_to_head, check_known, stored_revision

T = TypeVar("T")

#: how many ids `resolve_execution_id` returns at most (as SqliteStore's)
MAX_RESOLVED = 10

class ReadOnlyStore:
    """The reads of the engine's `Store` the CLI uses, as plain synchronous calls."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> ReadOnlyStore:
        """Open the file, creating or migrating it first when needed (its directory must exist)."""
        path = Path(path)
        if not path.exists():
            bring_file_to_head(path)
        conn = _connect(path)
        try:
            version = stored_revision(conn)
            if version != HEAD:
                check_known(version, path)
                conn.close()
                bring_file_to_head(path)
                conn = _connect(path)
            conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return cls(conn, path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ReadOnlyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, fn: Callable[..., T], *args: Any, snapshot: bool = False) -> T:
        conn = self._conn
        if snapshot:
            conn.execute("BEGIN")
        try:
            return fn(conn, *args)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    # -- the Store's reads ---------------------------------------------------------------------------
    def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]:
        return self._run(queries.list_executions, flt, snapshot=True)

    def get_execution(self, execution_id: str) -> Execution | None:
        return self._run(queries.get_execution, execution_id)

    def resolve_execution_id(self, prefix: str) -> list[str]:
        return self._run(queries.resolve_execution_id, prefix, MAX_RESOLVED)

    def get_steps(self, execution_id: str) -> list[Step]:
        return self._run(queries.get_steps, execution_id)

    def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]:
        return self._run(queries.list_artifacts, flt, snapshot=True)

    def get_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None, after_seq: int = -1,
                      before_seq: int | None = None, limit: int | None = None, newest_first: bool = False,
                      offset: int = 0) -> list[LogLine]:
        """As the Store's (engine.store.logs.LogSelection, whose defaults these are; that package,
        with every protocol and event of the engine, is not imported for it)."""
        return self._run(queries.get_log_lines, execution_id, step_ids, after_seq, before_seq, limit,
                         newest_first, offset, snapshot=True)

    # -- what a dead engine may have left ----------------------------------------------------------------
    def held_executions(self) -> list[tuple[str, str | None]]:
        """(id, owner) of the executions an engine holds open (storage.queries.held_executions): if
        one's owner is dead, the engine's store marks it lost (SqliteStore.mark_lost)."""
        return queries.held_executions(self._conn)


def _connect(path: Path) -> sqlite3.Connection:
    # a read of several statements begins its own transaction
    return pragmas.connect(path)

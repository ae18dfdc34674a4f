"""The statements of a batch's rows (storage.writes) as plain SQL, made from the tables' columns
(storage.columns) without SQLAlchemy: `stepflow exec` writes its batches without importing it
(~0.2 s, the whole of its start-up budget, issue 16). The upsert's text is the one SQLAlchemy's
SQLite dialect writes for `insert(table).on_conflict_do_update(...)` (tests/test_storage.py compares
them), with as many rows of `?` after VALUES as asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence


def values_sql(width: int, rows: int = 1) -> str:
    """`VALUES (?, …), (?, …), …`: `rows` rows of `width` parameters."""
    row = f"({', '.join('?' * width)})"
    return "VALUES " + ", ".join([row] * rows)


def upsert_sql(table: str, columns: Sequence[str], where: str | None = None, *, rows: int = 1) -> str:
    """`INSERT … ON CONFLICT (id) DO UPDATE SET` every column but `pk` and `id` to the new row's,
    `where` the guard (None: always), for `rows` rows of `columns` in that order. SQLite applies
    the rows in order: a second row of the same id updates the first one's."""
    changed = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in ("pk", "id"))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) {values_sql(len(columns), rows)} ON CONFLICT (id) DO UPDATE SET {changed}"
    return sql if where is None else f"{sql} WHERE {where}"


class MultiRow:
    """One statement's text for any number of rows, of a few sizes only: `chunk` rows, and the
    multiples of an eighth of it (see `padded`), or the powers of two below it (see `sizes`). Texts are made once and kept, so that sqlite3's statement
    cache (storage.write_connection) finds them prepared: the step upsert of 256 rows takes ~0.9 ms
    to prepare, half as long as SQLite takes to write its rows."""

    __slots__ = ("_make", "_texts", "chunk", "width")

    def __init__(self, width: int, chunk: int, make: Callable[[int], str]) -> None:
        self.width = width
        self.chunk = chunk
        self._make = make
        self._texts: dict[int, str] = {}

    def sql(self, rows: int) -> str:
        text = self._texts.get(rows)
        if text is None:
            text = self._texts[rows] = self._make(rows)
        return text

    def sizes(self, rows: int, max_params: int) -> Iterator[int]:
        """How many rows each statement takes, in order, for `rows` rows: `chunk` at a time (fewer
        if SQLite binds fewer than `chunk × width` parameters), the rest in powers of two, the
        largest first (at most log2(chunk) statements more). For rows that must each be sent once
        (`padded` is for rows that may be sent twice)."""
        step = self.rows_per_statement(max_params)
        whole, rest = divmod(rows, step)
        for _ in range(whole):
            yield step
        bit = 1 << rest.bit_length()
        while bit:
            if rest & bit:
                yield bit
            bit >>= 1

    def padded(self, rows: int, max_params: int) -> Iterator[tuple[int, int]]:
        """(rows taken, rows of the statement) for each statement, in order, for `rows` rows:
        `chunk` at a time, then the rest in one statement whose size is a multiple of an eighth of
        `chunk` (or the rest itself, when PADDED_EXACT rows or fewer), filled up with the rest's
        last row again. For statements where a row sent twice changes nothing the second time (an
        upsert of the same snapshot, an INSERT OR IGNORE): each statement costs the writer's thread
        a wait for Python's GIL when it returns (storage.writes), and the rest of a batch in powers
        of two was half of a batch's statements."""
        step = self.rows_per_statement(max_params)
        whole, rest = divmod(rows, step)
        for _ in range(whole):
            yield step, step
        if rest:
            grain = max(1, step // 8)
            yield rest, rest if rest <= PADDED_EXACT else -(-rest // grain) * grain

    def rows_per_statement(self, max_params: int) -> int:
        return max(1, min(self.chunk, max_params // self.width))


#: a rest of this many rows or fewer goes as a statement of its own size (`MultiRow.padded`)
PADDED_EXACT = 8

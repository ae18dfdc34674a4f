"""Domain objects to table rows and back, each table's mapping derived from one list: the table's
columns in storage/tables.py, matched by name to the fields of its dataclass (`RowMap`).

Adding a column is the Column in tables.py (with its field on the dataclass, and its name in
storage/columns.py, which the mappings of executions, steps and artifacts are made from: the CLI's
reads import no SQLAlchemy) plus a migration: the
writes' rows, the reads' SELECT list and the conversions of the values come from it. How a value is
converted follows the field's type: enums are stored as their values, JSON-like fields as JSON text,
datetimes as ISO text (storage.tables.UtcDateTime), text with what UTF-8 cannot encode replaced.

The functions are generated once, at import, as the plain code one would write by hand for each
table (`Execution(id=r[0], name=r[1], kind=_c2(r[2]), ...)`): a loop over the columns per row costs
twice as much on the read path, which turns a page of the list into objects on the event loop.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from engine.model import Artifact, Execution, Step
from engine.surrogates import replace_in, replace_surrogates
from storage import columns
from storage.columns import Columns, to_iso

if TYPE_CHECKING:
    from sqlalchemy import Table

T = TypeVar("T")

_loads = json.JSONDecoder().decode
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_fromiso = datetime.fromisoformat


def _text(value: str | None) -> str | None:
    # what UTF-8 cannot encode would fail the whole batch (see engine.surrogates); ASCII is the
    # usual case and costs one check
    return value if value is None or value.isascii() else replace_surrogates(value)


def _json(text: str | None) -> Any:
    # most rows hold empty environments, tags and metadata
    if text == "{}":
        return {}
    if text == "[]":
        return []
    return None if text is None else _loads(text)


def json_text(value: Any) -> str | None:
    if not value:  # most rows hold empty environments, tags and metadata
        return None if value is None else _EMPTY_JSON.get(type(value)) or _dumps(value)
    return _dumps(replace_in(value))


_EMPTY_JSON: dict[type, str] = {dict: "{}", list: "[]"}


def _when(text: str | None) -> datetime | None:
    return None if text is None else _fromiso(text)


def _iso(value: datetime | None) -> str | None:
    global _last_iso
    if value is None:
        return None
    # a marker step's created_at IS its started_at, and the steps a block of output starts and ends
    # share that block's time (engine.execution.state): one text for all of them. A tuple swapped
    # whole: a thread that reads it meanwhile sees the old pair or the new one.
    last = _last_iso
    if last[0] is value:
        return last[1]
    text = to_iso(value)
    _last_iso = (value, text)
    return text


#: the datetime `_iso` converted last (held, so no other object can take its identity), and its text
_last_iso: tuple[datetime | None, str | None] = (None, None)


class _EnumLookup(dict[Any, Any]):
    """Stored value -> enum member: indexing a dict is several times cheaper than calling the enum;
    an unknown value raises as the enum would."""

    def __init__(self, kind: type[enum.Enum]) -> None:
        super().__init__({None: None, **{member.value: member for member in kind}})
        self.kind = kind

    def __missing__(self, value: Any) -> Any:
        return self.kind(value)


class _Conversion(typing.NamedTuple):
    """Expressions of `{v}`, the value: as sqlite3 reads it -> the field; the field -> what
    SQLAlchemy binds (its column types make datetimes and JSON text); the field -> what sqlite3
    binds (plain SQL). With the names they use."""

    read: str
    bind: str
    raw: str
    names: dict[str, Any] = {}


def _conversion(hint: Any, json_column: bool, n: int) -> _Conversion:
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, enum.Enum):
        value = "(None if {v} is None else {v}.value)" if optional else "{v}.value"
        return _Conversion(f"_e{n}[{{v}}]", value, value, {f"_e{n}": _EnumLookup(origin)})
    if origin is datetime:
        return _Conversion("_when({v})" if optional else "_fromiso({v})", "{v}", "_iso({v})")
    if origin is bool:
        return _Conversion("bool({v})", "{v}", "{v}")
    if origin is str:
        # the usual case, ASCII, costs one check
        text = "_text({v})" if optional else "({v} if {v}.isascii() else replace_surrogates({v}))"
        return _Conversion("{v}", text, text)
    if origin in (int, float):
        return _Conversion("{v}", "{v}", "{v}")
    if origin in (dict, list) or hint is Any:
        # a JSON column's type makes the text itself; any other holds the text we make
        bind = "replace_in({v})" if json_column else "json_text({v})"
        return _Conversion("_json({v})", bind, "json_text({v})")
    raise TypeError(f"no stored form for a field of type {hint!r}")


def _compile(name: str, params: str, body: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    source = f"def {name}({params}):\n    return {body}\n"
    exec(source, namespace)  # noqa: S102 - our own text
    namespace[name].source = source  # to read what was made
    return typing.cast(Callable[..., Any], namespace[name])


def columns_of(table: Table | Columns) -> Columns:
    """A SQLAlchemy table's columns (and which are JSON), or the ones given."""
    if isinstance(table, Columns):
        return table
    from sqlalchemy import JSON

    return Columns(table.name, tuple(c.name for c in table.columns),
                   frozenset(c.name for c in table.columns if isinstance(c.type, JSON)))


class RowMap(Generic[T]):
    """A table's rows as objects of `cls`: every column of `table` but `skip` is a field of the same
    name (or the one `renamed` gives). `table`: a SQLAlchemy Table, or its Columns."""

    def __init__(self, cls: type[T], table: Table | Columns, *, renamed: Mapping[str, str] | None = None,
                 skip: Sequence[str] = ("pk",)) -> None:
        self.cls = cls
        table = columns_of(table)
        renamed = renamed or {}
        hints = typing.get_type_hints(cls)
        #: the mapped columns, in the table's order (the order of `select` and `values`)
        self.columns: tuple[str, ...] = tuple(c for c in table.names if c not in skip)
        fields = [renamed.get(c, c) for c in self.columns]
        missing = [f for f in fields if f not in hints]
        if missing:
            raise TypeError(f"{table.table}: no field of {cls.__name__} for column(s) {', '.join(missing)}")
        ns: dict[str, Any] = {"cls": cls, "_text": _text, "_json": _json, "_when": _when, "_iso": _iso,
                              "_fromiso": _fromiso, "json_text": json_text, "replace_in": replace_in,
                              "replace_surrogates": replace_surrogates}
        reads, binds, raws = [], [], []
        for i, (f, column) in enumerate(zip(fields, self.columns, strict=True)):
            conv = _conversion(hints[f], column in table.json, i)
            ns.update(conv.names)
            reads.append(f"{f}={conv.read.format(v=f'r[{i}]')}")
            binds.append(f"{column!r}: {conv.bind.format(v=f'o.{f}')}")
            raws.append(conv.raw.format(v=f"o.{f}"))
        #: a row of `columns`, as sqlite3 returns it (text datetimes and JSON) -> object
        self.from_values: Callable[[Sequence[Any]], T] = _compile("from_values", "r", f"cls({', '.join(reads)})", ns)
        #: object -> {column: value} for SQLAlchemy statements on `table`
        self.row: Callable[[T], dict[str, Any]] = _compile("row", "o", f"{{{', '.join(binds)}}}", ns)
        #: object -> the values of `columns` for plain SQL (sqlite3's types)
        self.values: Callable[[T], tuple[Any, ...]] = _compile("values", "o", f"({', '.join(raws)},)", ns)
        #: the columns for a SELECT or a RETURNING clause
        self.select = ", ".join(f'{table.table}."{c}"' for c in self.columns)
        self.returning = ", ".join(f'"{c}"' for c in self.columns)


EXECUTIONS = RowMap(Execution, columns.EXECUTIONS)
STEPS = RowMap(Step, columns.STEPS, renamed={"step_index": "index"})
ARTIFACTS = RowMap(Artifact, columns.ARTIFACTS)

execution_row = EXECUTIONS.row
step_row = STEPS.row
artifact_row = ARTIFACTS.row

"""Typed query-string parameters for every surface: integers within bounds, one of a set of choices,
booleans, timestamps. A value that is not what it must be is refused through the surface's own
error factory, so that each surface answers with its documented error body:

    q = QueryParams(request.query, error=executr_error)   # executr_error(400, "…") -> its exception
    limit = q.integer("limit", default=50, minimum=1, maximum=500)
    status = q.choice("status", JobStatus)                # an Enum, or a collection of strings
    follow = q.boolean("follow", default=False)
    since = q.timestamp("since")

The default factory is `RequestRefused` (what Monitor's error middleware renders). A parameter given
twice takes its first value; an empty value counts as not given, as a form's empty field does."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar, overload

from api_compat.request_parsing import ErrorFactory, RequestRefused

E = TypeVar("E", bound=Enum)

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
#: digits an integer parameter may have (Python's int() of a longer string is slow, then refused)
_MAX_DIGITS = 30


class QueryParams:
    """The query string of one request, read through `error` (see the module docstring)."""

    __slots__ = ("_query", "_error")

    def __init__(self, query: Mapping[str, str], *, error: ErrorFactory = RequestRefused) -> None:
        self._query = query
        self._error = error

    def refuse(self, name: str, must: str) -> Exception:
        """The surface's 400 for parameter `name`, which must be `must`."""
        return self._error(400, f"query parameter {name!r} must be {must}")

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self._query.get(name)
        return default if value is None or value == "" else value

    @overload
    def integer(self, name: str, default: int, *, minimum: int | None = ..., maximum: int | None = ...) -> int: ...

    @overload
    def integer(self, name: str, default: None = None, *, minimum: int | None = ...,
                maximum: int | None = ...) -> int | None: ...

    def integer(self, name: str, default: int | None = None, *, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        """An integer within [minimum, maximum] (either bound optional)."""
        raw = self._query.get(name)  # empty is not a value of this type: refused
        if raw is None:
            return default
        must = _bounds(minimum, maximum)
        digits = raw.strip().removeprefix("-").removeprefix("+")
        if not digits.isascii() or not digits.isdigit() or len(digits) > _MAX_DIGITS:
            raise self.refuse(name, must)
        value = int(raw)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise self.refuse(name, must)
        return value

    @overload
    def choice(self, name: str, choices: type[E], default: E | None = None) -> E | None: ...

    @overload
    def choice(self, name: str, choices: Collection[str], default: str | None = None) -> str | None: ...

    def choice(self, name: str, choices: type[Enum] | Collection[str],
               default: Enum | str | None = None) -> Enum | str | None:
        """One of `choices`: an Enum's values (the member is returned) or strings."""
        raw = self.text(name)
        if raw is None:
            return default
        if isinstance(choices, type) and issubclass(choices, Enum):
            members = {str(m.value): m for m in choices}
            if raw in members:
                return members[raw]
            raise self.refuse(name, "one of " + ", ".join(members))
        if raw in choices:
            return raw
        raise self.refuse(name, "one of " + ", ".join(sorted(choices)))

    @overload
    def boolean(self, name: str, default: bool) -> bool: ...

    @overload
    def boolean(self, name: str, default: None = None) -> bool | None: ...

    def boolean(self, name: str, default: bool | None = None) -> bool | None:
        """true/false (also 1/0, yes/no, on/off, in any case)."""
        raw = self._query.get(name)  # empty is not a value of this type: refused
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise self.refuse(name, "true or false")

    def timestamp(self, name: str, default: datetime | None = None) -> datetime | None:
        """An ISO 8601 date or date-time (`Z` or an offset; without one, UTC), as an aware UTC datetime."""
        raw = self._query.get(name)  # empty is not a value of this type: refused
        if raw is None:
            return default
        try:
            value = datetime.fromisoformat(raw.replace(" ", "+") if raw.count(" ") == 1 and "T" in raw else raw)
        except ValueError:
            raise self.refuse(name, "an ISO 8601 date-time (2024-01-15T10:30:00Z)") from None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum is not None:
        return f"an integer of at least {minimum}"
    if maximum is not None:
        return f"an integer of at most {maximum}"
    return "an integer"

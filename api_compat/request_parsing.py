"""Request parsing shared by every surface: JSON bodies (and JSON inside other parts of a request)
read one way, so that no input can make a handler fail with anything but a refusal.

Python's own `json.loads` has three ways to turn a client's bytes into a server error: nesting past
the interpreter's recursion limit (`[[[[…` under 1 MiB raises RecursionError), integers longer than
the int-from-string limit (4,300 digits: ValueError), and the non-JSON constants it accepts (`NaN`,
`Infinity`, and `1e999` read as infinity), which our own responses would then echo as invalid JSON.
`parse_json` refuses all of them, and nesting deeper than `MAX_JSON_DEPTH`, which no documented body
needs and which would make every later walk of the value (validation, the store's encoding, the
responses) a recursion risk.

A surface's error middleware turns `RequestRefused` into its documented error body (or the surface
passes its own `error` factory, `(status, message) -> exception`, to the readers here and to
`api_compat.query_params.QueryParams`), and asks
`input_error` about anything else a handler raised, so that the same failures coming from deeper
parsing (a workflow's YAML text inside a JSON body) are refusals too, not 500s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar, get_args

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from pydantic import BaseModel, ValidationError, ValidationInfo, field_validator

#: how deeply arrays and objects may nest in a JSON body (the documented bodies need 3 or 4)
MAX_JSON_DEPTH = 64

_INT_DIGITS = "integer string conversion"


class RequestRefused(Exception):
    """A request refused with an HTTP status and a message; each surface's error middleware renders
    it as that surface's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InvalidJson(ValueError):
    """Text that `parse_json` does not accept; `str()` says why, for a person."""


def _refuse_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise InvalidJson(f"the number {text[:20]}{'…' if len(text) > 20 else ''} is too large")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether arrays/objects nest deeper than `limit` (iteratively: the check itself must not recurse)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_json(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of `data`; raises `InvalidJson` (a ValueError) for anything else, whatever it is."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except InvalidJson:
        raise
    except RecursionError:
        raise InvalidJson(f"arrays and objects nest deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise InvalidJson("it is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InvalidJson(str(exc)) from None
    except ValueError as exc:
        if _INT_DIGITS in str(exc):
            raise InvalidJson("a number has more than 4,300 digits") from None
        raise InvalidJson(str(exc)) from None
    if _depth_exceeds(value, max_depth):
        raise InvalidJson(f"arrays and objects nest deeper than {max_depth} levels")
    return value


#: a body whose Content-Encoding does not decode (`gzip` that is not), or whose chunked framing is broken
_UNREADABLE = "the request body cannot be read: it is not what its Content-Encoding or framing says"


#: builds the exception a surface's error middleware renders as its error body (default: RequestRefused)
ErrorFactory = Callable[[int, str], Exception]


async def read_body(request: web.Request, *, error: ErrorFactory = RequestRefused) -> bytes:
    """The request's body; `error(400, …)` when aiohttp cannot decode it (it raises errors of
    its own there, which would otherwise be 500s)."""
    try:
        return await request.read()
    except (RequestPayloadError, HttpProcessingError):
        raise error(400, _UNREADABLE) from None


#: `read_json_body`'s `empty` when a body is required
REQUIRED: Any = object()


async def read_json_body(request: web.Request, *, empty: Any = REQUIRED,
                         error: ErrorFactory = RequestRefused) -> Any:
    """The request's JSON body, or `empty` when there is none (when `empty` is not given: refused).
    Raises `error(400, …)` when it is not JSON that `parse_json` accepts. aiohttp's
    `client_max_size` caps its size (413) before it is read."""
    raw = await read_body(request, error=error)
    if not raw.strip():
        if empty is not REQUIRED:
            return empty
        raise error(400, "the request body must be a JSON object")
    try:
        return parse_json(raw)
    except InvalidJson as exc:
        raise error(400, f"the request body is not valid JSON: {exc}") from None


def input_error(exc: BaseException) -> str | None:
    """For an error middleware: a message for a 400 when `exc` is one that only a client's input
    causes (parsing too deep a value, or too long or too large a number, anywhere in a handler; a
    body aiohttp cannot decode), else None."""
    if isinstance(exc, (RequestPayloadError, HttpProcessingError)):
        return _UNREADABLE
    if isinstance(exc, RecursionError):
        return "the request nests too deeply to be read"
    if isinstance(exc, ValueError) and _INT_DIGITS in str(exc):
        return "the request has a number with more than 4,300 digits"
    if isinstance(exc, OverflowError):
        # a number too large for a float or a C integer (YAML's `0x…` integers have no digit limit)
        return "the request has a number too large to use"
    return None



def _numeric(annotation: Any) -> bool:
    """int or float, alone or in a union with None (not with str or bool)."""
    if annotation in (int, float):
        return True
    args = [a for a in get_args(annotation) if a is not type(None)]
    return bool(args) and all(a in (int, float) for a in args)


class JsonNumbers(BaseModel):
    """A body whose int and float fields take JSON's numbers only: pydantic's lax mode would take
    `true` as 1 and "3" as 3, which a JSON schema's `integer` or `number` refuses (a strict int
    would refuse 3.0, which it accepts). Bodies subclass it; the fields' schemas are unchanged."""

    @field_validator("*", mode="before")
    @classmethod
    def _json_numbers_only(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and isinstance(value, bool | str | bytes) and _numeric(field.annotation):
            raise ValueError("must be a JSON number")
        return value


def describe_fields(exc: ValidationError) -> tuple[str, list[str]]:
    """A pydantic error as one line (`where: what; …`) and the fields it names."""
    parts, fields = [], []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        fields.append(where)
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts), fields


_Model = TypeVar("_Model", bound=BaseModel)


def validate_object(model: type[_Model], value: Any, refuse: Callable[[str, list[str]], Exception]) -> _Model:
    """`value` (a JSON body) as `model`; else `refuse(message, fields)` raised, a surface's own 400
    (fields empty when the body is not an object at all)."""
    if not isinstance(value, dict):
        raise refuse("the request body must be a JSON object", [])
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        message, fields = describe_fields(exc)
        raise refuse(f"invalid request: {message}", fields) from None

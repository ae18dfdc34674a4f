"""Parameter and property values: text to bool, int, float or seconds."""

from __future__ import annotations

import math
import re

_INT_RE = re.compile(r"[+-]?\d{1,18}")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d{1,3})?")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|secs|m|min|mins|h|hr|hrs)?", re.IGNORECASE)
_DURATION_UNITS = {
    "ms": 0.001,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
}
_TRUE_WORDS = frozenset({"true", "yes", "on", "1", "y"})


def convert_value(raw: str) -> object:
    """A parameter value as bool, int or float where it parses as one; else the text (unquoted)."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    lower = value.lower()
    if lower == "true":
        return True
    if lower == "false":
        return False
    if _INT_RE.fullmatch(value):
        return int(value)
    if _FLOAT_RE.fullmatch(value):
        number = float(value)
        if math.isfinite(number):
            return number
    return value


def as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return str(value).strip().lower() in _TRUE_WORDS


def as_seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if 0 <= value < math.inf else None
    match = _DURATION_RE.fullmatch(str(value).strip())
    if match is None:
        return None
    seconds = float(match[1]) * _DURATION_UNITS.get((match[2] or "s").lower(), 1.0)
    return seconds if math.isfinite(seconds) else None


def int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if _INT_RE.fullmatch(text) else None

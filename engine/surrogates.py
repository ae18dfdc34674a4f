"""Text that UTF-8 cannot encode: lone surrogates.

Python hands a program bytes that are not UTF-8 (an argument `caf\\xe9`, a file name) as lone
surrogates (U+DC80–U+DCFF, "surrogateescape"), and JSON can spell any lone surrogate ("\\ud800").
Such text goes to a child process unchanged (os.fsencode gives the original bytes back), but it cannot
be stored, printed or sent as UTF-8: what is shown and kept is a copy with U+FFFD in its place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REPLACEMENT = "\ufffd"


def has_surrogates(text: str) -> bool:
    if text.isascii():  # the usual case, and the cheap test
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def replace_surrogates(text: str) -> str:
    """`text` with each byte that was not UTF-8 (and each other lone surrogate) as U+FFFD; bytes
    escaped one by one that together are UTF-8 (`\\udcc3\\udca9`) become that character (é)."""
    if not has_surrogates(text):
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (JSON's "\ud800")
        escaped = "".join(REPLACEMENT if _not_a_byte(c) else c for c in text)
        return escaped.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def unencodable(text: str) -> str | None:
    """The first surrogate no bytes can be made of (not a surrogateescape'd byte), as `\\uXXXX`;
    None when the text can be given to a process."""
    if not has_surrogates(text):
        return None
    for c in text:
        if _not_a_byte(c):
            return f"\\u{ord(c):04x}"
    return None


def _not_a_byte(c: str) -> bool:
    """A surrogate that surrogateescape did not make (those are U+DC80–U+DCFF, bytes 0x80–0xFF)."""
    return 0xD800 <= ord(c) < 0xDC80 or 0xDD00 <= ord(c) <= 0xDFFF


def replace_in(value: Any) -> Any:
    """`value` (str, or JSON-like lists and dicts of them) with surrogates replaced; the same
    object when there was nothing to replace."""
    if isinstance(value, str):
        return replace_surrogates(value)
    if isinstance(value, Mapping):
        cleaned = {}
        changed = False
        for k, v in value.items():
            ck, cv = replace_in(k), replace_in(v)
            changed = changed or ck is not k or cv is not v
            cleaned[ck] = cv
        return cleaned if changed else value
    if isinstance(value, list | tuple):
        items = [replace_in(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items) if isinstance(value, tuple) else items
    return value


"""What may stand before a marker's keyword (whitespace, ANSI escape sequences), and taking it away."""

from __future__ import annotations

import re

# Possessive and atomic groups: a line that starts with blanks but holds no marker is rejected without
# backtracking, which keeps the block scan of `engine.markers.scan` at C speed for indented and
# coloured output too.
WHITESPACE = " \t\v\f\ufeff"
_BLANKS = r"[ \t\v\f\ufeff]*+"
# after ESC: CSI (colours, GitLab's \x1b[0K), OSC (titles, links), or a two-character escape
_ESCAPE_BODY = r"\[[0-?]*+[ -/]*+[@-~]|\][^\x07\x1b\n\r]*+(?:\x07|\x1b\\)|[@-Z\\-_]"
#: whitespace and ANSI escapes at the start of a line
PREFIX = rf"(?>{_BLANKS}(?:\x1b(?:{_ESCAPE_BODY}){_BLANKS})*+)"
PREFIX_RE = re.compile(PREFIX)
_ANSI_RE = re.compile(rf"\x1b(?:{_ESCAPE_BODY})")


def strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text) if "\x1b" in text else text


def clean(text: str) -> str:
    """A name or message as shown: without ANSI escapes and surrounding whitespace."""
    return strip_ansi(text).strip()


def has_whitespace(prefix: str) -> bool:
    return any(char in WHITESPACE for char in strip_ansi(prefix))

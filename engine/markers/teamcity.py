"""TeamCity service messages: ``##teamcity[message 'value']`` or ``##teamcity[message name='value' ...]``,
values escaped with ``|``."""

from __future__ import annotations

import re

from engine.markers.ansi import clean, strip_ansi
from engine.markers.types import (
    Annotated,
    ArtifactDeclared,
    Marker,
    ProgressReported,
    StepClosed,
    StepErrored,
    StepOpened,
)

_VALUE = r"'(?:[^'|]|\|.)*'"
_MESSAGE_RE = re.compile(rf"##teamcity\[([A-Za-z][\w.-]*)((?:\s+[\w.:-]+\s*=\s*{_VALUE})*|\s*{_VALUE})\s*\]")
_ATTR_RE = re.compile(rf"([\w.:-]+)\s*=\s*({_VALUE})")
_ESCAPE_RE = re.compile(r"\|(0x[0-9A-Fa-f]{4}|.)")
_ESCAPES = {
    "'": "'",
    "n": "\n",
    "r": "\r",
    "]": "]",
    "[": "[",
    "|": "|",
    "x": "\x85",
    "l": "\u2028",
    "p": "\u2029",
}


def parse_teamcity(body: str) -> list[Marker]:
    match = _MESSAGE_RE.match(body)
    if match is None:
        return []
    message, args = match[1], match[2].strip()
    single: str | None = None
    attrs: dict[str, str] = {}
    if args.startswith("'"):
        single = _unescape(args)
    else:
        attrs = {key: _unescape(value) for key, value in _ATTR_RE.findall(args)}

    def main(attr: str) -> str:
        return single if single is not None else attrs.get(attr, "")

    if message == "blockOpened":
        name = clean(main("name"))
        if not name:
            return []
        params: dict[str, object] = {k: v for k, v in attrs.items() if k != "name"}
        return [StepOpened(name, params, dialect="teamcity", key=name)]
    if message == "blockClosed":
        return [StepClosed(clean(main("name")) or None, "teamcity")]
    if message == "progressMessage":
        text = clean(main("text"))
        return [ProgressReported(text=text)] if text else []
    if message == "publishArtifacts":
        return _artifacts(main("path"))
    if message == "buildProblem":
        return [StepErrored(clean(main("description")))]
    if message == "message":
        status = attrs.get("status", "NORMAL").upper()
        level = {"WARNING": "warning", "ERROR": "error", "FAILURE": "error"}.get(status)
        if level is None:
            return []
        text = strip_ansi(main("text"))
        details = attrs.get("errorDetails")
        return [Annotated(level, f"{text}\n{details}" if details else text)]
    return []


def _unescape(quoted: str) -> str:
    text = quoted[1:-1]
    if "|" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        code = match[1]
        if len(code) == 6:
            return chr(int(code[2:], 16))
        return _ESCAPES.get(code, match[0])

    return _ESCAPE_RE.sub(replace, text)


def _artifacts(rules: str) -> list[Marker]:
    """TeamCity artifact rules, one per line or comma: ``[+:]path [=> target]``; ``-:`` rules exclude."""
    markers: list[Marker] = []
    for rule in re.split(r"[\n,]", rules):
        rule = rule.strip()
        if not rule or rule.startswith("-:"):
            continue
        if rule.startswith("+:"):
            rule = rule[2:]
        path, _, target = rule.partition("=>")
        if path.strip():
            markers.append(ArtifactDeclared(path.strip(), target.strip()))
    return markers

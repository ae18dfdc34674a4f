"""GitHub Actions workflow commands: ``::group::``, ``::endgroup::``, ``::error`` & co, ``::add-mask::``."""

from __future__ import annotations

from engine.markers.ansi import clean, strip_ansi
from engine.markers.types import Annotated, Marker, MaskAdded, StepClosed, StepOpened
from engine.markers.values import int_or_none

_LEVELS = frozenset({"error", "warning", "notice"})


def parse_github(body: str) -> list[Marker]:
    end = body.find("::", 2)
    if end == -1:
        return []
    command, _, raw_props = body[2:end].partition(" ")
    data = body[end + 2 :]
    if command == "group":
        return [StepOpened(clean(_unescape_data(data)) or "group", dialect="github")]
    if command == "endgroup":
        return [StepClosed(None, "github")]
    if command == "add-mask":
        value = _unescape_data(data)
        return [MaskAdded(value)] if value.strip() else []
    if command in _LEVELS or command == "debug":
        props: dict[str, str] = {}
        for item in raw_props.split(","):
            key, sep, value = item.partition("=")
            if sep:
                props[key.strip()] = _unescape_property(value)
        return [
            Annotated(
                command,
                strip_ansi(_unescape_data(data)),
                props.get("file") or None,
                int_or_none(props.get("line")),
                props.get("title") or None,
            )
        ]
    return []


def _unescape_data(text: str) -> str:
    if "%" not in text:
        return text
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def _unescape_property(text: str) -> str:
    if "%" not in text:
        return text
    return (
        text.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%25", "%")
    )

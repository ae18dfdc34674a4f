"""GitLab CI collapsible sections: ``section_start:<ts>:<name>[options]`` and ``section_end:<ts>:<name>``."""

from __future__ import annotations

import re

from engine.markers.types import Marker, StepClosed, StepOpened
from engine.markers.values import convert_value

_SECTION_RE = re.compile(r"section_(start|end):(\d+):([^\s\[\]\x1b]+)(?:\[([^\]]*)\])?")


def parse_gitlab(body: str) -> list[Marker]:
    match = _SECTION_RE.match(body)
    if match is None:
        return []
    kind, _, name, options = match.groups()
    if kind == "end":
        return [StepClosed(name, "gitlab")]
    params: dict[str, object] = {}
    for item in (options or "").split(","):
        key, sep, value = item.partition("=")
        if key.strip():
            params[key.strip()] = convert_value(value) if sep else True
    return [StepOpened(name, params, dialect="gitlab", key=name)]

"""Azure Pipelines logging commands: ``##[group]``/``##[endgroup]``/``##[error]`` & co, and ``##vso[...]``."""

from __future__ import annotations

import re

from engine.markers.ansi import clean, strip_ansi
from engine.markers.types import (
    Annotated,
    ArtifactDeclared,
    Marker,
    MaskAdded,
    ProgressReported,
    StepClosed,
    StepOpened,
)
from engine.markers.values import as_bool, convert_value, int_or_none

_FORMAT_RE = re.compile(r"##\[(group|endgroup|error|warning|debug)\]", re.IGNORECASE)
_VSO_RE = re.compile(r"##vso\[([\w.-]+)((?:\s[^\]]*)?)\]")


def parse_azure(body: str) -> list[Marker]:
    match = _FORMAT_RE.match(body)
    if match is not None:
        command = match[1].lower()
        data = body[match.end() :]
        if command == "group":
            return [StepOpened(clean(data) or "group", dialect="azure")]
        if command == "endgroup":
            return [StepClosed(None, "azure")]
        return [Annotated(command, strip_ansi(data))]
    match = _VSO_RE.match(body)
    if match is None:
        return []
    command = match[1].lower()
    data = _unescape_data(body[match.end() :])
    props: dict[str, str] = {}
    for item in match[2].split(";"):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            props[key.strip().lower()] = _unescape_property(value.strip())
    if command == "task.setprogress":
        percent = convert_value(props.get("value", ""))
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            return []
        return [ProgressReported(max(0.0, min(100.0, float(percent))), text=clean(data) or None)]
    if command == "task.logissue":
        level = props.get("type", "").lower()
        if level not in ("error", "warning"):
            return []
        return [
            Annotated(
                level,
                strip_ansi(data),
                props.get("sourcepath") or None,
                int_or_none(props.get("linenumber")),
            )
        ]
    if command == "artifact.upload":
        path = data.strip()
        return [ArtifactDeclared(path, props.get("artifactname", ""))] if path else []
    if command == "task.setsecret" or (
        command == "task.setvariable" and as_bool(props.get("issecret", "false"))
    ):
        return [MaskAdded(data)] if data.strip() else []
    return []


def _unescape_data(text: str) -> str:
    if "%" not in text:
        return text
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%AZP25", "%")


def _unescape_property(text: str) -> str:
    if "%" not in text:
        return text
    return _unescape_data(text.replace("%3B", ";").replace("%5D", "]"))

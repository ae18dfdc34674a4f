"""The StepFlow Monitor markers (``STEP_START:`` with its parameters, ``STEP_COMPLETE:``, ``STEP_ERROR:``,
``ARTIFACT:``, ``META:``) and our ``STEP_PROGRESS:``, in strict and in lenient mode."""

from __future__ import annotations

import re
from collections.abc import Callable

from engine.markers.ansi import clean, strip_ansi
from engine.markers.types import (
    ArtifactDeclared,
    Marker,
    MetaSet,
    ProgressReported,
    StepClosed,
    StepErrored,
    StepOpened,
)
from engine.markers.values import as_bool, as_seconds, convert_value

_NATIVE_KEYWORDS = ("STEP_START:", "STEP_COMPLETE:", "STEP_ERROR:", "STEP_PROGRESS:", "ARTIFACT:", "META:")
# Lenient mode: the keywords anywhere, in any (ASCII) case, like the reference implementation
_LENIENT_RE = re.compile(
    r"(step_start|step_complete|step_error|step_progress|artifact|meta):", re.IGNORECASE | re.ASCII
)

_NAME_END_RE = re.compile(r"[\[{]| --")
_PARAM_RE = re.compile(
    r"\[(?P<bracket>[^\]]*)\]"
    r"|\{(?P<brace>[^}]*)\}"
    r"|--(?P<flag>[A-Za-z_][\w.-]*)(?:=(?P<flag_value>\"[^\"]*\"|'[^']*'|\S*))?"
)
# inside [a=1, b=2] or {a: 1, b: 2}: a comma only separates when a new key follows, so values may hold commas
_BRACKET_SPLIT_RE = re.compile(r",(?=\s*[\w.-]+\s*=)")
_BRACE_SPLIT_RE = re.compile(r",(?=\s*[\"']?[\w.-]+[\"']?\s*:)")

_PROGRESS_RE = re.compile(
    r"\s*(?:(?P<done>\d{1,18})\s*/\s*(?P<total>\d{1,18})|(?P<percent>\d{1,18}(?:\.\d*)?|\.\d+)\s*%?)"
    r"(?:\s+(?P<text>.*))?"
)


def parse_native_strict(body: str) -> Marker | None:
    """The marker ``body`` starts with, keyword spelt exactly."""
    # the usual two first, without the look-up
    if body.startswith("STEP_START:"):
        return parse_step_start(body[11:])
    if body.startswith("STEP_COMPLETE:"):
        return parse_step_complete(body[14:])
    # each keyword holds one colon, its last character: the text up to the first colon is the one
    colon = body.find(":", 0, _LONGEST_KEYWORD)
    if colon < 0:
        return None
    parse = _NATIVE_PARSERS.get(body[:colon])
    return None if parse is None else parse(body[colon + 1 :])


def parse_native_lenient(line: str) -> Marker | None:
    """The first marker found anywhere in ``line``, keyword in any case."""
    for match in _LENIENT_RE.finditer(line):
        marker = _native(match[1].upper(), line[match.end() :])
        if marker is not None:
            return marker
    return None


def _native(keyword: str, payload: str) -> Marker | None:
    """``keyword`` upper-case, without its colon."""
    parse = _NATIVE_PARSERS.get(keyword)
    return None if parse is None else parse(payload)


def _split_name(payload: str) -> tuple[str, str]:
    match = _NAME_END_RE.search(payload)
    if match is None:
        return payload.strip(), ""
    return payload[: match.start()].strip(), payload[match.start() :]


def _parse_params(text: str) -> dict[str, object]:
    params: dict[str, object] = {}
    for match in _PARAM_RE.finditer(text):
        if match["bracket"] is not None:
            pairs = [part.partition("=") for part in _BRACKET_SPLIT_RE.split(match["bracket"])]
        elif match["brace"] is not None:
            pairs = [part.partition(":") for part in _BRACE_SPLIT_RE.split(match["brace"])]
        else:
            value = match["flag_value"]
            pairs = [(match["flag"], "=", value)] if value is not None else [(match["flag"], "", "")]
        for key, sep, value in pairs:
            key = key.strip().strip("\"'")
            if key:
                # a bare [flag] or --flag is a switch that is on
                params[key] = convert_value(value) if sep else True
    return params


def parse_step_start(payload: str) -> StepOpened | None:
    """What follows ``STEP_START:``, as a marker (None: no name)."""
    # a name alone (no escapes, no parameters: the usual marker) the short way
    if "\x1b" not in payload and "[" not in payload and "{" not in payload and "--" not in payload:
        name = payload.strip()
        return StepOpened(name, {}, False, None, "stepflow") if name else None
    name, rest = _split_name(strip_ansi(payload))
    if not name:
        return None
    params = _parse_params(rest) if rest else {}
    stop_on_error = False
    estimated: float | None = None
    for key, value in params.items():
        lower = key.lower()
        if lower == "stop_on_error":
            stop_on_error = as_bool(value)
        elif lower in ("duration", "estimated_duration"):
            estimated = as_seconds(value)
    return StepOpened(name, params, stop_on_error, estimated, "stepflow")


def parse_step_complete(payload: str) -> StepClosed:
    """What follows ``STEP_COMPLETE:``, as a marker."""
    # a name alone (no escapes, no parameters: the usual marker) the short way
    if "\x1b" not in payload and "[" not in payload and "{" not in payload and "--" not in payload:
        return StepClosed(payload.strip() or None, "stepflow")
    name, _ = _split_name(strip_ansi(payload))
    return StepClosed(name or None, "stepflow")


def _progress(payload: str) -> ProgressReported | None:
    match = _PROGRESS_RE.fullmatch(strip_ansi(payload))
    if match is None:
        return None
    text = (match["text"] or "").strip() or None
    if match["done"] is not None:
        done, total = int(match["done"]), int(match["total"])
        percent = min(100.0, done * 100.0 / total) if total else None
        return ProgressReported(percent, done, total, text)
    return ProgressReported(min(100.0, float(match["percent"])), None, None, text)


def _artifact(payload: str) -> ArtifactDeclared | None:
    path, _, description = strip_ansi(payload).partition(":")
    path = path.strip()
    return ArtifactDeclared(path, description.strip()) if path else None


def _meta(payload: str) -> MetaSet | None:
    key, sep, value = strip_ansi(payload).partition(":")
    key = key.strip()
    return MetaSet(key, value.strip()) if key and sep else None


def _step_errored(payload: str) -> StepErrored:
    return StepErrored(clean(payload))


#: each keyword's parser of what follows it, by the keyword without its colon
_NATIVE_PARSERS: dict[str, Callable[[str], Marker | None]] = {
    "STEP_START": parse_step_start,
    "STEP_COMPLETE": parse_step_complete,
    "STEP_ERROR": _step_errored,
    "STEP_PROGRESS": _progress,
    "ARTIFACT": _artifact,
    "META": _meta,
}
assert {f"{keyword}:" for keyword in _NATIVE_PARSERS} == set(_NATIVE_KEYWORDS)
_LONGEST_KEYWORD = max(map(len, _NATIVE_KEYWORDS))

"""Step markers: recognise, in one line of a command's output, the markers of specs/step-markers.md.

Stateless: each line is parsed on its own into zero or more markers (frozen dataclasses below). What
the markers mean together (which step is open, what closes what) is `engine.marker_tree`'s business.

Families recognised:

- StepFlow Monitor: ``STEP_START:``, ``STEP_COMPLETE:``, ``STEP_ERROR:``, ``STEP_PROGRESS:``,
  ``ARTIFACT:``, ``META:``.
- GitHub Actions ``::group::`` …, GitLab ``section_start:``/``section_end:``, TeamCity
  ``##teamcity[...]``, Azure Pipelines ``##[group]`` / ``##vso[...]``, Buildkite ``--- ``/``+++ ``/``~~~ ``.

Strict mode (the default) recognises a marker only where its keyword starts the line, after optional
whitespace and ANSI escape sequences, with the keyword spelt exactly. Lenient mode (``markers:
lenient``) also finds the StepFlow keywords anywhere in the line and in any case, as the reference
implementation does (so ``Uploading artifact: foo`` declares an artifact). The CI conventions are
parsed the same way in both modes: each system defines them by the start of the line.

Most output holds no marker at all, so the cost that matters is rejecting plain lines:
`may_have_markers` and `candidate_line_indexes` do it on a whole block of lines joined with "\\n",
with one regex scan that jumps from line end to line end (plus three substring searches in lenient
mode), and `MarkerParser.parse_lines` parses only the lines they let through. About 0.1 s for a
million plain lines in strict mode, against 0.2 s calling `MarkerParser.parse` on each line.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: the dialects a marker can come from (StepOpened.dialect, StepClosed.dialect)
DIALECTS = ("stepflow", "github", "gitlab", "teamcity", "azure", "buildkite")


# -- the markers -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StepOpened:
    name: str
    #: every parameter given with the marker, values converted to bool/int/float where they parse
    params: dict[str, object] = field(default_factory=dict)
    stop_on_error: bool = False
    #: seconds
    estimated_duration: float | None = None
    dialect: str = "stepflow"
    #: what a closing marker names to close this one: GitLab's section name, TeamCity's block name
    key: str | None = None
    #: the group is the one to show expanded (Buildkite ``+++``)
    expanded: bool = False


@dataclass(frozen=True, slots=True)
class StepClosed:
    #: the step (StepFlow), section (GitLab) or block (TeamCity) to close; None: the open one
    name: str | None
    dialect: str = "stepflow"


@dataclass(frozen=True, slots=True)
class StepErrored:
    """``STEP_ERROR:`` or TeamCity ``buildProblem``: the open step fails."""

    message: str


@dataclass(frozen=True, slots=True)
class ArtifactDeclared:
    #: as printed: relative paths are resolved later, against the command's working directory
    path: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class MetaSet:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class ProgressReported:
    #: 0..100; computed from done/total when those are given
    percent: float | None = None
    done: int | None = None
    total: int | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Annotated:
    """An annotation on the open step: GitHub ``::error`` & co, Azure ``logissue``, TeamCity ``message``."""

    #: "error", "warning", "notice" or "debug"
    level: str
    message: str
    file: str | None = None
    line: int | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class MaskAdded:
    """A value to mask from now on (GitHub ``::add-mask::``, Azure ``task.setsecret``)."""

    value: str


Marker = (
    StepOpened
    | StepClosed
    | StepErrored
    | ArtifactDeclared
    | MetaSet
    | ProgressReported
    | Annotated
    | MaskAdded
)


# -- where a marker can be -------------------------------------------------------------------------------
# Strict mode: a marker's keyword starts the line, after optional whitespace and ANSI escapes.
# Possessive and atomic groups: a line that starts with blanks but holds no marker is rejected without
# backtracking, which keeps the block scan below at C speed for indented and coloured output too.
_WS = " \t\v\f\ufeff"
_BLANKS = r"[ \t\v\f\ufeff]*+"
# after ESC: CSI (colours, GitLab's \x1b[0K), OSC (titles, links), or a two-character escape
_ESCAPE_BODY = r"\[[0-?]*+[ -/]*+[@-~]|\][^\x07\x1b\n\r]*+(?:\x07|\x1b\\)|[@-Z\\-_]"
_PREFIX = rf"(?>{_BLANKS}(?:\x1b(?:{_ESCAPE_BODY}){_BLANKS})*+)"
_PREFIX_RE = re.compile(_PREFIX)
_ANSI_RE = re.compile(rf"\x1b(?:{_ESCAPE_BODY})")
# what a marker's text starts with, whatever its dialect
_KEYWORD_STARTS = r"(?:STEP_|ARTIFACT:|META:|::|##|section_|--- |\+\+\+ |~~~ )"
_FIRST_LINE_RE = re.compile(_PREFIX + _KEYWORD_STARTS)
# "\n" first: the regex engine then jumps from line end to line end
_OTHER_LINES_RE = re.compile("\n" + _PREFIX + _KEYWORD_STARTS)
# Lenient mode: the StepFlow keywords anywhere, in any (ASCII) case, like the reference implementation ...
_LENIENT_RE = re.compile(
    r"(step_start|step_complete|step_error|step_progress|artifact|meta):", re.IGNORECASE | re.ASCII
)
# ... which a block scan finds in lower-cased text with substring searches, much faster than the regex
_LENIENT_NEEDLES = ("step_", "artifact:", "meta:")


def may_have_markers(text: str, lenient: bool = False) -> bool:
    """False when no line of ``text`` (one line, or many joined with "\\n") can hold a marker.

    Conservative: True means "parse the lines to find out". A block of plain lines is rejected at
    C speed.
    """
    if "\r" in text:
        text = text.replace("\r", "\n")
    if _FIRST_LINE_RE.match(text) or _OTHER_LINES_RE.search(text):
        return True
    if lenient:
        lowered = text.lower()
        return any(needle in lowered for needle in _LENIENT_NEEDLES)
    return False


def candidate_line_indexes(lines: Sequence[str], lenient: bool = False) -> list[int]:
    """Indexes, in order, of the lines of ``lines`` that may hold a marker.

    Every line in which `MarkerParser.parse` finds a marker is among them; in strict mode nearly only
    those. The work is a scan or two of the block joined with "\\n", plus a little per candidate.
    """
    if not lines:
        return []
    text = "\n".join(lines)
    if "\r" in text or text.count("\n") != len(lines) - 1:
        # A line holds "\r" or "\n" after all: offsets can't be mapped back to lines, check each line.
        return [i for i, line in enumerate(lines) if may_have_markers(line, lenient)]
    found: set[int] = set()
    if _FIRST_LINE_RE.match(text):
        found.add(0)
    # each match starts at the "\n" that ends the line before the candidate
    _add_lines(text, [match.start() + 1 for match in _OTHER_LINES_RE.finditer(text)], found)
    if lenient:
        # lower() can change the length of non-ASCII text, never the number of "\n" before a point
        lowered = text.lower()
        find = lowered.find
        hits: list[int] = []
        for needle in _LENIENT_NEEDLES:
            pos = find(needle)
            while pos != -1:
                hits.append(pos)
                # one hit per line is enough: go on from the next line
                eol = find("\n", pos)
                pos = find(needle, eol + 1) if eol != -1 else -1
        _add_lines(lowered, hits, found)
    return sorted(found)


def _add_lines(text: str, positions: list[int], found: set[int]) -> None:
    """Add to ``found`` the index of the line of ``text`` holding each position."""
    index = 0
    previous = 0
    count = text.count
    for pos in sorted(positions):
        index += count("\n", previous, pos)
        previous = pos
        found.add(index)


_NATIVE_KEYWORDS = ("STEP_START:", "STEP_COMPLETE:", "STEP_ERROR:", "STEP_PROGRESS:", "ARTIFACT:", "META:")


def _strip_ansi(text: str) -> str:
    return _ANSI_RE.sub("", text) if "\x1b" in text else text


def _clean(text: str) -> str:
    """A name or message as shown: without ANSI escapes and surrounding whitespace."""
    return _strip_ansi(text).strip()


# -- values -----------------------------------------------------------------------------------------------
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


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return str(value).strip().lower() in _TRUE_WORDS


def _as_seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if 0 <= value < math.inf else None
    match = _DURATION_RE.fullmatch(str(value).strip())
    if match is None:
        return None
    seconds = float(match[1]) * _DURATION_UNITS.get((match[2] or "s").lower(), 1.0)
    return seconds if math.isfinite(seconds) else None


# -- StepFlow markers -------------------------------------------------------------------------------------
_NAME_END_RE = re.compile(r"[\[{]| --")
_PARAM_RE = re.compile(
    r"\[(?P<bracket>[^\]]*)\]"
    r"|\{(?P<brace>[^}]*)\}"
    r"|--(?P<flag>[A-Za-z_][\w.-]*)(?:=(?P<flag_value>\"[^\"]*\"|'[^']*'|\S*))?"
)
# inside [a=1, b=2] or {a: 1, b: 2}: a comma only separates when a new key follows, so values may hold commas
_BRACKET_SPLIT_RE = re.compile(r",(?=\s*[\w.-]+\s*=)")
_BRACE_SPLIT_RE = re.compile(r",(?=\s*[\"']?[\w.-]+[\"']?\s*:)")


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


def _step_opened(payload: str) -> StepOpened | None:
    name, rest = _split_name(_strip_ansi(payload))
    if not name:
        return None
    params = _parse_params(rest) if rest else {}
    stop_on_error = False
    estimated: float | None = None
    for key, value in params.items():
        lower = key.lower()
        if lower == "stop_on_error":
            stop_on_error = _as_bool(value)
        elif lower in ("duration", "estimated_duration"):
            estimated = _as_seconds(value)
    return StepOpened(name, params, stop_on_error, estimated, "stepflow")


def _step_closed(payload: str) -> StepClosed:
    name, _ = _split_name(_strip_ansi(payload))
    return StepClosed(name or None, "stepflow")


_PROGRESS_RE = re.compile(
    r"\s*(?:(?P<done>\d{1,18})\s*/\s*(?P<total>\d{1,18})|(?P<percent>\d{1,18}(?:\.\d*)?|\.\d+)\s*%?)"
    r"(?:\s+(?P<text>.*))?"
)


def _progress(payload: str) -> ProgressReported | None:
    match = _PROGRESS_RE.fullmatch(_strip_ansi(payload))
    if match is None:
        return None
    text = (match["text"] or "").strip() or None
    if match["done"] is not None:
        done, total = int(match["done"]), int(match["total"])
        percent = min(100.0, done * 100.0 / total) if total else None
        return ProgressReported(percent, done, total, text)
    return ProgressReported(min(100.0, float(match["percent"])), None, None, text)


def _artifact(payload: str) -> ArtifactDeclared | None:
    path, _, description = _strip_ansi(payload).partition(":")
    path = path.strip()
    return ArtifactDeclared(path, description.strip()) if path else None


def _meta(payload: str) -> MetaSet | None:
    key, sep, value = _strip_ansi(payload).partition(":")
    key = key.strip()
    return MetaSet(key, value.strip()) if key and sep else None


def _native(keyword: str, payload: str) -> Marker | None:
    """``keyword`` upper-case, without its colon."""
    if keyword == "STEP_START":
        return _step_opened(payload)
    if keyword == "STEP_COMPLETE":
        return _step_closed(payload)
    if keyword == "STEP_ERROR":
        return StepErrored(_clean(payload))
    if keyword == "STEP_PROGRESS":
        return _progress(payload)
    if keyword == "ARTIFACT":
        return _artifact(payload)
    if keyword == "META":
        return _meta(payload)
    return None


def _parse_native_strict(body: str) -> Marker | None:
    for keyword in _NATIVE_KEYWORDS:
        if body.startswith(keyword):
            return _native(keyword[:-1], body[len(keyword) :])
    return None


# -- GitHub Actions ------------------------------------------------------------------------------------
_GITHUB_LEVELS = frozenset({"error", "warning", "notice"})


def _github_data(text: str) -> str:
    if "%" not in text:
        return text
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def _github_property(text: str) -> str:
    if "%" not in text:
        return text
    return (
        text.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%25", "%")
    )


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if _INT_RE.fullmatch(text) else None


def _parse_github(body: str) -> list[Marker]:
    end = body.find("::", 2)
    if end == -1:
        return []
    command, _, raw_props = body[2:end].partition(" ")
    data = body[end + 2 :]
    if command == "group":
        return [StepOpened(_clean(_github_data(data)) or "group", dialect="github")]
    if command == "endgroup":
        return [StepClosed(None, "github")]
    if command == "add-mask":
        value = _github_data(data)
        return [MaskAdded(value)] if value.strip() else []
    if command in _GITHUB_LEVELS or command == "debug":
        props: dict[str, str] = {}
        for item in raw_props.split(","):
            key, sep, value = item.partition("=")
            if sep:
                props[key.strip()] = _github_property(value)
        return [
            Annotated(
                command,
                _strip_ansi(_github_data(data)),
                props.get("file") or None,
                _int_or_none(props.get("line")),
                props.get("title") or None,
            )
        ]
    return []


# -- GitLab CI ----------------------------------------------------------------------------------------------
_GITLAB_RE = re.compile(r"section_(start|end):(\d+):([^\s\[\]\x1b]+)(?:\[([^\]]*)\])?")


def _parse_gitlab(body: str) -> list[Marker]:
    match = _GITLAB_RE.match(body)
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


# -- TeamCity -------------------------------------------------------------------------------------------------
_TC_VALUE = r"'(?:[^'|]|\|.)*'"
_TEAMCITY_RE = re.compile(
    rf"##teamcity\[([A-Za-z][\w.-]*)((?:\s+[\w.:-]+\s*=\s*{_TC_VALUE})*|\s*{_TC_VALUE})\s*\]"
)
_TC_ATTR_RE = re.compile(rf"([\w.:-]+)\s*=\s*({_TC_VALUE})")
_TC_ESCAPE_RE = re.compile(r"\|(0x[0-9A-Fa-f]{4}|.)")
_TC_ESCAPES = {
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


def _tc_unescape(quoted: str) -> str:
    text = quoted[1:-1]
    if "|" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        code = match[1]
        if len(code) == 6:
            return chr(int(code[2:], 16))
        return _TC_ESCAPES.get(code, match[0])

    return _TC_ESCAPE_RE.sub(replace, text)


def _parse_teamcity(body: str) -> list[Marker]:
    match = _TEAMCITY_RE.match(body)
    if match is None:
        return []
    message, args = match[1], match[2].strip()
    single: str | None = None
    attrs: dict[str, str] = {}
    if args.startswith("'"):
        single = _tc_unescape(args)
    else:
        attrs = {key: _tc_unescape(value) for key, value in _TC_ATTR_RE.findall(args)}

    def main(attr: str) -> str:
        return single if single is not None else attrs.get(attr, "")

    if message == "blockOpened":
        name = _clean(main("name"))
        if not name:
            return []
        params: dict[str, object] = {k: v for k, v in attrs.items() if k != "name"}
        return [StepOpened(name, params, dialect="teamcity", key=name)]
    if message == "blockClosed":
        return [StepClosed(_clean(main("name")) or None, "teamcity")]
    if message == "progressMessage":
        text = _clean(main("text"))
        return [ProgressReported(text=text)] if text else []
    if message == "publishArtifacts":
        return _teamcity_artifacts(main("path"))
    if message == "buildProblem":
        return [StepErrored(_clean(main("description")))]
    if message == "message":
        status = attrs.get("status", "NORMAL").upper()
        level = {"WARNING": "warning", "ERROR": "error", "FAILURE": "error"}.get(status)
        if level is None:
            return []
        text = _strip_ansi(main("text"))
        details = attrs.get("errorDetails")
        return [Annotated(level, f"{text}\n{details}" if details else text)]
    return []


def _teamcity_artifacts(rules: str) -> list[Marker]:
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


# -- Azure Pipelines --------------------------------------------------------------------------------------------
_AZURE_FORMAT_RE = re.compile(r"##\[(group|endgroup|error|warning|debug)\]", re.IGNORECASE)
_AZURE_VSO_RE = re.compile(r"##vso\[([\w.-]+)((?:\s[^\]]*)?)\]")


def _azure_data(text: str) -> str:
    if "%" not in text:
        return text
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%AZP25", "%")


def _azure_property(text: str) -> str:
    if "%" not in text:
        return text
    return _azure_data(text.replace("%3B", ";").replace("%5D", "]"))


def _parse_azure(body: str) -> list[Marker]:
    match = _AZURE_FORMAT_RE.match(body)
    if match is not None:
        command = match[1].lower()
        data = body[match.end() :]
        if command == "group":
            return [StepOpened(_clean(data) or "group", dialect="azure")]
        if command == "endgroup":
            return [StepClosed(None, "azure")]
        return [Annotated(command, _strip_ansi(data))]
    match = _AZURE_VSO_RE.match(body)
    if match is None:
        return []
    command = match[1].lower()
    data = _azure_data(body[match.end() :])
    props: dict[str, str] = {}
    for item in match[2].split(";"):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            props[key.strip().lower()] = _azure_property(value.strip())
    if command == "task.setprogress":
        percent = convert_value(props.get("value", ""))
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            return []
        return [ProgressReported(max(0.0, min(100.0, float(percent))), text=_clean(data) or None)]
    if command == "task.logissue":
        level = props.get("type", "").lower()
        if level not in ("error", "warning"):
            return []
        return [
            Annotated(
                level,
                _strip_ansi(data),
                props.get("sourcepath") or None,
                _int_or_none(props.get("linenumber")),
            )
        ]
    if command == "artifact.upload":
        path = data.strip()
        return [ArtifactDeclared(path, props.get("artifactname", ""))] if path else []
    if command == "task.setsecret" or (
        command == "task.setvariable" and _as_bool(props.get("issecret", "false"))
    ):
        return [MaskAdded(data)] if data.strip() else []
    return []


# -- Buildkite ----------------------------------------------------------------------------------------------------
# Lines that start like a Buildkite group header but are other tools' output: unified diff headers
# ("--- a/x", "+++ b/x", "--- /dev/null", "--- x<TAB>date") and Go's test results ("--- FAIL: TestX").
_NOT_BUILDKITE_RE = re.compile(r"(?:a/|b/|/dev/null|(?:PASS|FAIL|SKIP|BENCH): )|.*\t")


def _parse_buildkite(body: str) -> list[Marker]:
    head = body[:4]
    if head not in ("--- ", "+++ ", "~~~ "):
        return []
    title = body[4:]
    if _NOT_BUILDKITE_RE.match(title):
        return []
    title = _clean(title)
    if not title:
        return []
    return [StepOpened(title, dialect="buildkite", expanded=head == "+++ ")]


# -- the parser ---------------------------------------------------------------------------------------------------
_CI_PARSERS = {
    ":": _parse_github,
    "s": _parse_gitlab,
    "#": lambda body: _parse_teamcity(body) if body.startswith("##teamcity[") else _parse_azure(body),
    "-": _parse_buildkite,
    "+": _parse_buildkite,
    "~": _parse_buildkite,
}
_NATIVE_FIRST = frozenset("SAM")
_PREFIX_START = _WS + "\x1b"


class MarkerParser:
    """Parses lines into markers. Holds only its mode: one parser can serve any number of commands.

    >>> MarkerParser().parse("STEP_START:build[stop_on_error=true]")
    [StepOpened(name='build', params={'stop_on_error': True}, stop_on_error=True, estimated_duration=None, dialect='stepflow', key=None, expanded=False)]
    >>> MarkerParser().parse("Uploading artifact: foo"), MarkerParser(lenient=True).parse("Uploading artifact: foo")
    ([], [ArtifactDeclared(path='foo', description='')])
    """

    __slots__ = ("lenient",)

    def __init__(self, lenient: bool = False) -> None:
        self.lenient = lenient

    def parse(self, line: str) -> list[Marker]:
        """The markers in one line (usually none, sometimes one). Never raises."""
        try:
            if "\r" in line:
                # not split at "\r" by the caller (GitLab's "section_start:…\r\x1b[0Kheader"):
                # each piece is a line of its own, as the line splitter would have made it
                return [marker for piece in line.split("\r") for marker in self._parse_line(piece)]
            return self._parse_line(line)
        except Exception:  # a parser bug must not stop a command's output from being read
            log.debug("marker parser failed on %r", line[:200], exc_info=True)
            return []

    def parse_lines(self, lines: Sequence[str]) -> list[tuple[int, list[Marker]]]:
        """``(index, markers)`` for each line of ``lines`` that holds markers, in order.

        The fast way to parse a block of output: plain lines are skipped by `candidate_line_indexes`.
        """
        parse = self.parse
        found: list[tuple[int, list[Marker]]] = []
        for index in candidate_line_indexes(lines, self.lenient):
            markers = parse(lines[index])
            if markers:
                found.append((index, markers))
        return found

    def _parse_line(self, line: str) -> list[Marker]:
        if not line:
            return []
        start = 0
        first = line[0]
        if first in _PREFIX_START:
            match = _PREFIX_RE.match(line)
            start = match.end() if match else 0
            if start >= len(line):
                return []
            first = line[start]
        ci = _CI_PARSERS.get(first)
        # a Buildkite header starts the line: an indented "--- " is other output (Go's subtests)
        if ci is not None and not (first in "-+~" and _has_whitespace(line[:start])):
            markers = ci(line[start:])
            if markers:
                return markers
        if self.lenient:
            lowered = line.lower()
            # _LENIENT_NEEDLES, spelt out: this runs for every line in lenient mode
            if "step_" not in lowered and "artifact:" not in lowered and "meta:" not in lowered:
                return []
            for match in _LENIENT_RE.finditer(line):
                marker = _native(match[1].upper(), line[match.end() :])
                if marker is not None:
                    return [marker]
            return []
        if first in _NATIVE_FIRST:
            marker = _parse_native_strict(line[start:])
            return [marker] if marker is not None else []
        return []


def _has_whitespace(prefix: str) -> bool:
    return any(char in _WS for char in _strip_ansi(prefix))

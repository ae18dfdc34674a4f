"""`MarkerParser`: finds, in one line or a block of lines, the markers of every dialect."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

from engine.markers.ansi import PREFIX_RE, WHITESPACE, has_whitespace
from engine.markers.azure import parse_azure
from engine.markers.buildkite import parse_buildkite
from engine.markers.github import parse_github
from engine.markers.gitlab import parse_gitlab
from engine.markers.scan import candidate_line_indexes
from engine.markers.stepflow import (
    parse_native_lenient,
    parse_native_strict,
    parse_step_complete,
    parse_step_start,
)
from engine.markers.teamcity import parse_teamcity
from engine.markers.types import Marker

log = logging.getLogger(__name__)

# the CI dialects, by the first character of the marker
_CI_PARSERS: dict[str, Callable[[str], list[Marker]]] = {
    ":": parse_github,
    "s": parse_gitlab,
    "#": lambda body: parse_teamcity(body) if body.startswith("##teamcity[") else parse_azure(body),
    "-": parse_buildkite,
    "+": parse_buildkite,
    "~": parse_buildkite,
}
_NATIVE_FIRST = frozenset("SAM")
_PREFIX_START = WHITESPACE + "\x1b"


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
            # not the line itself: it may hold a secret, and the parser does not know which
            log.debug("marker parser failed on a line of %d characters", len(line), exc_info=True)
            return []

    def parse_lines(self, lines: Sequence[str]) -> list[tuple[int, list[Marker]]]:
        """``(index, markers)`` for each line of ``lines`` that holds markers, in order.

        The fast way to parse a block of output: plain lines are skipped by `candidate_line_indexes`.
        """
        return list(self.iter_lines(lines))

    def iter_lines(self, lines: Sequence[str]) -> Iterator[tuple[int, list[Marker]]]:
        """`parse_lines`, one line's markers at a time: for a reader that is done with each before
        the next (a command's pump). A block's markers are then not all alive at once, which the
        garbage collector went through again and again (thousands of objects a block)."""
        parse = self.parse
        strict = not self.lenient
        for index in candidate_line_indexes(lines, self.lenient):
            line = lines[index]
            if strict and line.startswith("STEP_") and "\r" not in line:
                # the usual marker, StepFlow's at the start of the line: what `parse` would do
                # for it, without its steps (no prefix, no CI dialect starts with "S")
                marker: Marker | None
                try:
                    # the usual two without parse_native_strict's look-up of the keyword
                    if line.startswith("STEP_START:"):
                        marker = parse_step_start(line[11:])
                    elif line.startswith("STEP_COMPLETE:"):
                        marker = parse_step_complete(line[14:])
                    else:
                        marker = parse_native_strict(line)
                except Exception:  # as `parse`: a parser bug must not stop the output being read
                    log.debug("marker parser failed on a line of %d characters", len(line), exc_info=True)
                    continue
                if marker is not None:
                    yield index, [marker]
                continue
            markers = parse(line)
            if markers:
                yield index, markers

    def _parse_line(self, line: str) -> list[Marker]:
        if not line:
            return []
        start = 0
        first = line[0]
        if first in _PREFIX_START:
            match = PREFIX_RE.match(line)
            start = match.end() if match else 0
            if start >= len(line):
                return []
            first = line[start]
        ci = _CI_PARSERS.get(first)
        # a Buildkite header starts the line: an indented "--- " is other output (Go's subtests)
        if ci is not None and not (first in "-+~" and has_whitespace(line[:start])):
            markers = ci(line[start:])
            if markers:
                return markers
        if self.lenient:
            lowered = line.lower()
            # scan.LENIENT_NEEDLES, spelt out: this runs for every line in lenient mode
            if "step_" not in lowered and "artifact:" not in lowered and "meta:" not in lowered:
                return []
            marker = parse_native_lenient(line)
            return [marker] if marker is not None else []
        if first in _NATIVE_FIRST:
            marker = parse_native_strict(line[start:])
            return [marker] if marker is not None else []
        return []

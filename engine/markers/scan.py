"""Rejecting plain lines fast: which lines of a block may hold a marker, found with one regex scan.

Strict mode: a marker's keyword starts the line, after optional whitespace and ANSI escapes. Lenient
mode adds the StepFlow keywords anywhere in any case, found with substring searches in lower-cased
text, much faster than a regex.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from engine.markers.ansi import PREFIX

# what a marker's text starts with, whatever its dialect
_KEYWORD_STARTS = r"(?:STEP_|ARTIFACT:|META:|::|##|section_|--- |\+\+\+ |~~~ )"
_FIRST_LINE_RE = re.compile(PREFIX + _KEYWORD_STARTS)
# "\n" first: the regex engine then jumps from line end to line end
_OTHER_LINES_RE = re.compile("\n" + PREFIX + _KEYWORD_STARTS)
#: what a line holds, lower-cased, when it holds a StepFlow keyword in lenient mode
LENIENT_NEEDLES = ("step_", "artifact:", "meta:")


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
        return any(needle in lowered for needle in LENIENT_NEEDLES)
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
    strict: list[int] = [0] if _FIRST_LINE_RE.match(text) else []
    # each match starts at the "\n" that ends the line before the candidate: the lines found are
    # in order, each once
    index = 0
    previous = 0
    count = text.count
    add = strict.append
    for match in _OTHER_LINES_RE.finditer(text):
        pos = match.start()
        index += count("\n", previous, pos + 1)
        previous = pos + 1
        add(index)
    if not lenient:
        return strict
    found = set(strict)
    # lower() can change the length of non-ASCII text, never the number of "\n" before a point
    lowered = text.lower()
    find = lowered.find
    hits: list[int] = []
    for needle in LENIENT_NEEDLES:
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

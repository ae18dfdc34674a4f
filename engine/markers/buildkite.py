"""Buildkite group headers: a line starting ``--- ``, ``+++ `` (the group to expand) or ``~~~ ``."""

from __future__ import annotations

import re

from engine.markers.ansi import clean
from engine.markers.types import Marker, StepOpened

_HEADS = ("--- ", "+++ ", "~~~ ")
# Lines that start like a Buildkite group header but are other tools' output: unified diff headers
# ("--- a/x", "+++ b/x", "--- /dev/null", "--- x<TAB>date") and Go's test results ("--- FAIL: TestX").
_NOT_BUILDKITE_RE = re.compile(r"(?:a/|b/|/dev/null|(?:PASS|FAIL|SKIP|BENCH): )|.*\t")


def parse_buildkite(body: str) -> list[Marker]:
    head = body[:4]
    if head not in _HEADS:
        return []
    title = body[4:]
    if _NOT_BUILDKITE_RE.match(title):
        return []
    title = clean(title)
    if not title:
        return []
    return [StepOpened(title, dialect="buildkite", expanded=head == "+++ ")]

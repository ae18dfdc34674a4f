"""Step markers: recognise, in one line of a command's output, the markers of specs/step-markers.md.

Stateless: each line is parsed on its own into zero or more markers (dataclasses of
`engine.markers.types`). What the markers mean together (which step is open, what closes what) is
`engine.execution.marker_tree`'s business.

Families recognised, a module each:

- StepFlow Monitor (`stepflow`): ``STEP_START:``, ``STEP_COMPLETE:``, ``STEP_ERROR:``,
  ``STEP_PROGRESS:``, ``ARTIFACT:``, ``META:``.
- GitHub Actions ``::group::`` … (`github`), GitLab ``section_start:``/``section_end:`` (`gitlab`),
  TeamCity ``##teamcity[...]`` (`teamcity`), Azure Pipelines ``##[group]`` / ``##vso[...]`` (`azure`),
  Buildkite ``--- ``/``+++ ``/``~~~ `` (`buildkite`).

Strict mode (the default) recognises a marker only where its keyword starts the line, after optional
whitespace and ANSI escape sequences (`ansi`), with the keyword spelt exactly. Lenient mode
(``markers: lenient``) also finds the StepFlow keywords anywhere in the line and in any case, as the
reference implementation does (so ``Uploading artifact: foo`` declares an artifact). The CI
conventions are parsed the same way in both modes: each system defines them by the start of the line.

Most output holds no marker at all, so the cost that matters is rejecting plain lines:
`may_have_markers` and `candidate_line_indexes` (`scan`) do it on a whole block of lines joined with
"\\n", with one regex scan that jumps from line end to line end (plus three substring searches in
lenient mode), and `MarkerParser.parse_lines` (`parser`) parses only the lines they let through. About
0.1 s for a million plain lines in strict mode, against 0.2 s calling `MarkerParser.parse` on each line.
"""

from engine.markers.parser import MarkerParser
from engine.markers.scan import candidate_line_indexes, may_have_markers
from engine.markers.types import (
    DIALECTS,
    Annotated,
    ArtifactDeclared,
    Marker,
    MaskAdded,
    MetaSet,
    ProgressReported,
    StepClosed,
    StepErrored,
    StepOpened,
)
from engine.markers.values import convert_value

__all__ = [
    "DIALECTS",
    "Annotated",
    "ArtifactDeclared",
    "Marker",
    "MarkerParser",
    "MaskAdded",
    "MetaSet",
    "ProgressReported",
    "StepClosed",
    "StepErrored",
    "StepOpened",
    "candidate_line_indexes",
    "convert_value",
    "may_have_markers",
]

"""How one log line looks in the log pane: marker lines told apart, the stream's gutter, the time,
the step's label when the view shows several steps, search matches.

Pure functions over a `LogLine` and the view's settings: `LogView` caches what they return.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from rich.style import Style
from rich.text import Text

from engine.model import LogLine, Step, StepKind, Stream
from stepflow_tui.display import fmt_clock, truncate
from stepflow_tui.log_window import strip_ansi

#: marker lines (specs/step-markers.md), as the engine recognises them at the start of a line
MARKER_LINE = re.compile(
    r"^\s*(?:STEP_START:|STEP_COMPLETE:|STEP_ERROR:|STEP_PROGRESS:|ARTIFACT:|META:"
    r"|::(?:group|endgroup|error|warning|notice|add-mask|debug)\b|section_(?:start|end):"
    r"|##teamcity\[|##\[(?:group|endgroup)\]|##vso\[|(?:---|\+\+\+|~~~) )"
)
#: lines of several steps carry their step's name, this wide at most, in one of these colours (the
#: name tells them apart without colour too)
LABEL_MAX = 12
LABEL_STYLES = ("cyan", "magenta", "green", "yellow", "blue", "bright_cyan", "bright_magenta", "bright_green")
GUTTER = {Stream.STDOUT: (" ", ""), Stream.STDERR: ("!", "bold red"), Stream.SYSTEM: ("»", "bold yellow")}


def is_marker_line(text: str) -> bool:
    return bool(MARKER_LINE.match(strip_ansi(text)))


def line_text(raw: str, marker_style: Style) -> tuple[Text, bool]:
    """The line's text with its ANSI colours, and whether it is a marker line."""
    marker = is_marker_line(raw)
    if marker:
        text = Text(strip_ansi(raw), style=marker_style)
    else:
        text = Text.from_ansi(raw) if "\x1b" in raw else Text(raw)
    text.end = ""
    return text, marker


def step_labels(steps: Sequence[Step], in_view: Callable[[str], bool]) -> dict[str, tuple[str, str]]:
    """Step id -> (label, style) for the steps whose lines the view shows, when they are several
    (branches do not count, but get a label: a command's lines outside its markers)."""
    if sum(1 for s in steps if s.kind is not StepKind.BRANCH and in_view(s.id)) <= 1:
        return {}
    shown = [s for s in steps if in_view(s.id)]
    return {s.id: (truncate(s.name, LABEL_MAX), LABEL_STYLES[i % len(LABEL_STYLES)]) for i, s in enumerate(shown)}


def decorated_line(
    line: LogLine,
    text: Text,
    *,
    wrap: bool,
    timestamps: bool,
    labels: dict[str, tuple[str, str]],
    label_width: int,
    search: str,
    match_style: Style | None,
    match_line_style: Style | None,
) -> Text:
    """The screen text of a log line: gutter, time, step label, then `text` with the search's
    matches in `match_style` and the whole line in `match_line_style` when it is the current match."""
    out = Text(no_wrap=not wrap, end="")
    gutter, style = GUTTER.get(line.stream, (" ", ""))
    out.append(gutter, style=style)
    if timestamps:
        out.append(fmt_clock(line.timestamp) + " ", style="dim")
    if labels:
        name, label_style = labels.get(line.step_id or "", ("", ""))
        out.append(name.ljust(label_width) + " ", style=label_style)
    start = len(out)
    out.append_text(text)
    if line.stream is Stream.STDERR:
        out.stylize("red", start)
    if search and match_style is not None:
        plain = out.plain.lower()
        needle = search.lower()
        start = plain.find(needle)
        while start != -1:
            out.stylize(match_style, start, start + len(needle))
            start = plain.find(needle, start + len(needle))
    if match_line_style is not None:
        out.stylize(match_line_style)
    return out

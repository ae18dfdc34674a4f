"""How domain values look on screen: status glyphs and styles, times, styled progress bars
(durations, sizes and the bars' text: `stepflow_tui.formatting`, shared with the CLI).

Every status has a distinct glyph as well as a colour, so the screen reads the same with NO_COLOR.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rich.text import Text

from stepflow_tui import formatting
from stepflow_tui.formatting import fmt_clock  # noqa: F401 - the TUI's name for it

#: status value -> (glyph, style)
STATUS_GLYPHS: dict[str, tuple[str, str]] = {
    "pending": ("·", "dim"),
    "running": ("▶", "bold cyan"),
    "completed": ("✓", "green"),
    "failed": ("✗", "bold red"),
    "skipped": ("↷", "yellow"),
    "cancelled": ("■", "magenta"),
}

Clock = Callable[[], datetime]


def utc_clock() -> datetime:
    return datetime.now(UTC)


def status_glyph(status: str) -> tuple[str, str]:
    return STATUS_GLYPHS.get(status, ("?", ""))


def status_text(status: str, *, with_name: bool = False) -> Text:
    glyph, style = status_glyph(status)
    return Text(f"{glyph} {status}" if with_name else glyph, style=style)


def duration_between(start: datetime | None, end: datetime | None, now: datetime) -> float | None:
    if start is None:
        return None
    return ((end or now) - start).total_seconds()


def fmt_started(value: datetime | None, now: datetime) -> str:
    """Local time; the date only when it is not today."""
    if value is None:
        return ""
    local = value.astimezone()
    if local.date() == now.astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%m-%d %H:%M")


def progress_text(percent: float | None, width: int = 10, style: str = "cyan") -> Text:
    """A progress bar of `width` cells and its percentage (`formatting.progress_bar`, `percent`);
    blank of the same width when there is no figure."""
    if percent is None:
        return Text(" " * (width + 5))
    fraction = percent / 100
    text = Text(formatting.progress_bar(fraction, width), style=style)
    text.append(formatting.percent(fraction).rjust(5))
    return text


def truncate(value: str, width: int) -> str:
    if width <= 0:
        return ""
    if len(value) <= width:
        return value
    return value[: max(width - 1, 0)] + "…"

"""How domain values look on screen: status glyphs and styles, durations, times, sizes, bars.

Every status has a distinct glyph as well as a colour, so the screen reads the same with NO_COLOR.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rich.text import Text

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


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


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


def fmt_clock(value: datetime) -> str:
    return value.astimezone().strftime("%H:%M:%S.%f")[:-3]


def fmt_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def progress_bar(percent: float | None, width: int = 10, style: str = "cyan") -> Text:
    """A bar of eighth blocks plus the percentage, `width` cells for the bar."""
    if percent is None:
        return Text(" " * (width + 5))
    percent = min(max(percent, 0.0), 100.0)
    eighths = int(round(percent / 100 * width * 8))
    full, part = divmod(eighths, 8)
    bar = "█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")
    text = Text(bar.ljust(width), style=style)
    text.append(f"{percent:4.0f}%")
    return text


def truncate(value: str, width: int) -> str:
    if width <= 0:
        return ""
    if len(value) <= width:
        return value
    return value[: max(width - 1, 0)] + "…"

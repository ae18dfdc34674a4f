"""How durations, sizes and progress look, in the CLI and in the TUI alike: one style, one place.

Durations (`duration(seconds)`): at most six characters, the two largest units that matter.

    0.0004  -> 0ms        0.85 -> 850ms       1.24 -> 1.2s        59.9 -> 59.9s
    184.7   -> 3m04s      3720 -> 1h02m       180000 -> 2d02h

Under a second in whole milliseconds, under a minute in seconds with one decimal (both rounded), then
minutes and seconds, hours and minutes (under two days), days and hours, each second unit two
digits and cut as a clock cuts them (3m04s until 3m05s). A value that rounds up to a unit's end is
written in the next unit (0.9996 -> 1.0s, 59.96 -> 1m00s). Negative values (clocks that moved) are
0ms; None and values that are not finite are "".

Sizes (`size(bytes)`): binary units with a space, `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB`,
`1.0 TiB`; bytes whole, the others with one decimal. None is "".

Progress (`progress_bar(fraction, width)`): `width` cells of eighth blocks (`█▏▎▍▌▋▊▉`) padded with
spaces, so what follows stays in place; `percent(fraction)` is the figure beside it (`42%`).
Fractions run from 0 to 1 (the engine's percentages divided by 100) and are clamped to that range.
"""

from __future__ import annotations

import math
from datetime import datetime

_PARTIAL_BLOCKS = "▏▎▍▌▋▊▉"
_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB")


def duration(seconds: float | None) -> str:
    """`850ms`, `1.2s`, `3m04s`, `1h02m`, `2d03h` (see the module's docstring)."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(seconds, 0.0)
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    tenths = round(seconds * 10)
    if tenths < 600:
        return f"{tenths / 10:.1f}s"
    whole = max(int(seconds), 60)  # as a clock shows them: 3m04s until 3m05s
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def size(count: int | float | None) -> str:
    """`512 B`, `1.5 KiB`, `12.0 MiB` (see the module's docstring)."""
    if count is None:
        return ""
    value = max(float(count), 0.0)
    if round(value) < 1024:
        return f"{round(value)} B"
    for unit in _SIZE_UNITS:
        value /= 1024
        if round(value, 1) < 1024 or unit == _SIZE_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _clamped(fraction: float) -> float:
    if math.isnan(fraction):
        return 0.0
    return min(max(fraction, 0.0), 1.0)


def progress_bar(fraction: float, width: int) -> str:
    """`width` cells: full blocks, one partial block, spaces."""
    if width <= 0:
        return ""
    eighths = round(_clamped(fraction) * width * 8)
    full, part = divmod(eighths, 8)
    bar = "█" * full + (_PARTIAL_BLOCKS[part - 1] if part else "")
    return bar.ljust(width)


def percent(fraction: float) -> str:
    """`0%` … `100%`, whole percents, what a progress bar's figure reads."""
    return f"{round(_clamped(fraction) * 100)}%"


def fmt_clock(value: datetime) -> str:
    """A line's time of day, local, to the millisecond: `14:03:07.250`."""
    return value.astimezone().strftime("%H:%M:%S.%f")[:-3]

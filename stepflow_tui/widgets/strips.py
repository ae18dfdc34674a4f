"""Turning one line of Rich text into a Textual `Strip` of an exact width (for line-API widgets)."""

from __future__ import annotations

from rich.console import Console
from rich.style import Style
from rich.text import Text
from textual.strip import Strip


def text_strip(text: Text, console: Console, width: int, base: Style, *, offset: int = 0) -> Strip:
    """One line of `text`, cut at `offset` for `width` cells, padded, over the `base` style."""
    strip = Strip(list(text.render(console)), text.cell_len)
    if offset:
        strip = strip.crop(offset, offset + width)
    strip = strip.crop_extend(0, width, None)
    return strip.apply_style(base)

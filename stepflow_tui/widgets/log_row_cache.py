"""What the log pane keeps of the lines it has drawn: each line's text, its screen rows and their
strips, so a repaint renders only the screen rows it has not rendered before.

The texts hold across looks (a bounded LRU); the screen rows and strips hold for one look of the view
(width, wrap, times, markers, search...) and are dropped when it changes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from rich.text import Text
from textual.strip import Strip

#: this many line texts at most (the oldest go first)
TEXTS_MAX = 4000

#: a line's key: (row, seq); a screen row's key: (row, seq, part)
LineKey = tuple[int, int]
PartKey = tuple[int, int, int]


class RowCache:
    def __init__(self) -> None:
        self._texts: OrderedDict[LineKey, tuple[Text, bool]] = OrderedDict()
        #: how the rows look (width, wrap, times...): the parts and strips hold for one look
        self._look: tuple | None = None
        #: (row, seq) -> the row's screen rows (none for a hidden marker line), for the current look
        self.parts: dict[LineKey, list[Text]] = {}
        #: (row, seq, part) -> its strip, for the current look, x offset and base style
        self._strips: dict[PartKey, Strip] = {}
        self._strips_for: tuple | None = None

    def clear(self) -> None:
        """Forget everything (the theme changed: the cached texts and strips carry its styles)."""
        self._texts.clear()
        self.parts.clear()
        self._strips.clear()

    def clear_texts(self) -> None:
        self._texts.clear()

    def text(self, key: LineKey, make: Callable[[], tuple[Text, bool]]) -> tuple[Text, bool]:
        cached = self._texts.get(key)
        if cached is None:
            cached = self._texts[key] = make()
            if len(self._texts) > TEXTS_MAX:
                self._texts.popitem(last=False)
        return cached

    def set_look(self, look: tuple) -> None:
        if look != self._look:
            self._look = look
            self.parts.clear()
            self._strips.clear()

    def strip(self, key: PartKey, strips_for: tuple, make: Callable[[], Strip], in_view: Iterable[PartKey | None],
              rows_in_view: int) -> Strip:
        """The strip of screen row `key` (made by `make` if not cached for the current look and
        `strips_for`: x offset, width, base style); the cache keeps a few screens' worth."""
        strips_for = (self._look, *strips_for)
        if strips_for != self._strips_for:
            self._strips_for = strips_for
            self._strips.clear()
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = make()
            if len(self._strips) > 4 * max(rows_in_view, 1):
                # keep the rows in view (a followed tail passes every line once)
                keep = set(in_view)
                self._strips = {k: v for k, v in self._strips.items() if k in keep}
        return strip

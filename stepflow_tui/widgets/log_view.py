"""The log pane: a virtual view over one execution's stored log (see `log_window.LogWindow`).

The scroll position is a log row: the view lays out from the top row down, so wrapped lines take
several screen rows and hidden marker lines none, without knowing every line's height. Live lines
arrive through `add_live()`; the view repaints at most LIVE_REPAINT times a second however many came,
and a repaint renders only the screen rows it has not rendered before (a followed tail moves up by
the new lines: the rows still in view keep their strips).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual import events, work
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.model import LogLine, Step
from stepflow_tui.log_window import LogWindow
from stepflow_tui.widgets.log_lines import decorated_line, line_text, step_labels
from stepflow_tui.widgets.log_row_cache import RowCache
from stepflow_tui.widgets.strips import text_strip

#: live lines repaint the view at most this many times a second: a tail scrolling by at 20,000
#: lines/s reads the same at 20 frames as at 60, and the loop time left over answers the keys
LIVE_REPAINT = 20


class LogView(ScrollView, can_focus=True):
    BINDINGS = [
        Binding("up,k", "scroll_rows(-1)", "Up", show=False, id="log.up"),
        Binding("down,j", "scroll_rows(1)", "Down", show=False, id="log.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="log.page_up"),
        Binding("pagedown,space", "page(1)", "Page down", show=False, id="log.page_down"),
        Binding("home,g", "top", "Top", show=False, id="log.top"),
        Binding("end,G", "bottom", "Bottom", show=False, id="log.bottom"),
        Binding("f", "toggle_follow", "Follow", id="log.follow"),
        Binding("t", "toggle_timestamps", "Times", id="log.timestamps"),
        Binding("w", "toggle_wrap", "Wrap", id="log.wrap"),
        # the footer says what `m` does now: one binding shown at a time (check_action)
        Binding("m", "markers(True)", "Show markers", id="log.markers"),
        Binding("m", "markers(False)", "Hide markers", id="log.hide_markers"),
        Binding("n", "next_match(1)", "Next", id="log.next_match"),
        Binding("N", "next_match(-1)", "Previous", id="log.previous_match"),
    ]

    COMPONENT_CLASSES = {"log-view--match", "log-view--match-line", "log-view--placeholder", "log-view--marker"}

    DEFAULT_CSS = """
    LogView > .log-view--match { background: $warning; color: $background; }
    LogView > .log-view--match-line { background: $warning 25%; }
    LogView > .log-view--placeholder { color: $text-muted; }
    LogView > .log-view--marker { color: $text-muted; text-style: italic; }
    """

    follow: reactive[bool] = reactive(True)
    timestamps: reactive[bool] = reactive(False)
    wrap: reactive[bool] = reactive(False)
    #: marker lines (STEP_PROGRESS:…, ::group::…) are hidden as GitHub Actions hides its workflow
    #: commands: the tree shows what they say
    show_markers: reactive[bool] = reactive(False)

    @dataclass
    class StateChanged(Message):
        """Follow, rows, search state: for the pane's title line."""

        log_view: LogView

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.window: LogWindow | None = None
        self.search: str = ""
        self.match_row: int | None = None
        self.searching = False
        self._cache = RowCache()
        self._layout_key: tuple | None = None
        #: screen rows: (log row, key of its strip or None while the line is not loaded, text)
        self._screen_rows: list[tuple[int, tuple[int, int, int] | None, Text | None]] = []
        #: the layout and base style of the frame being rendered
        self._frame: tuple[list[tuple[int, tuple[int, int, int] | None, Text | None]], Style] | None = None
        self._live_pending = False
        self._last_live_repaint = 0.0
        self._max_width = 0
        self._fetching: set[int] = set()
        self._tail_pending = False
        self._state_pending = False
        self._seen_seq = -1
        #: the execution's steps in tree order; and the label and style of each step whose lines
        #: the view shows, when they are several ("All output" of parallel steps)
        self._steps: list[Step] = []
        self._labels: dict[str, tuple[str, str]] = {}
        self._label_width = 0
        self._labels_version = 0
        #: scrolling to the tail (not the user moving away from it)
        self._to_tail = False

    @property
    def client(self):
        return self.app.client  # type: ignore[attr-defined]

    # -- source ----------------------------------------------------------------------------------
    def show(self, execution_id: str, step_ids: Sequence[str] | None = None) -> None:
        """Point the view at an execution (and optionally a set of steps) and show its tail."""
        self.window = LogWindow(self.client, execution_id, step_ids)
        live = getattr(self.app, "live", None)
        entry = live.get(execution_id) if live is not None else None
        self._seen_seq = entry.seen_seq(self.window.step_ids) if entry is not None else -1
        self._cache.clear_texts()
        self._layout_key = None
        self._max_width = 0
        self.match_row = None
        self.follow = True
        self._relabel()
        self._open(self.window)

    def set_steps(self, steps: Sequence[Step]) -> None:
        """The execution's steps, in tree order: a view over the lines of several carries their names."""
        self._steps = list(steps)
        self._relabel()

    def _relabel(self) -> None:
        window = self.window
        labels = step_labels(self._steps, lambda step_id: window is None or window.matches(step_id))
        if labels != self._labels:
            self._labels = labels
            self._label_width = max((len(name) for name, _style in labels.values()), default=0)
            self._labels_version += 1
            self._layout_key = None
            self.refresh()

    @work(group="log-open", exclusive=True)
    async def _open(self, window: LogWindow) -> None:
        try:
            await window.open()
        except Exception as exc:
            self.app.report_error(exc)  # type: ignore[attr-defined]
            return
        if window is not self.window:
            return
        self._rows_changed()
        # lines logged before this view opened may reach the store a moment later
        self._schedule_tail()

    @property
    def total(self) -> int:
        return self.window.total if self.window else 0

    def add_live(self, lines: Sequence[LogLine]) -> None:
        window = self.window
        if window is None:
            return
        mine = [ln for ln in lines if ln.execution_id == window.execution_id and window.matches(ln.step_id)]
        if mine:
            # what the events told: the store will have it a moment later, if not yet
            self._seen_seq = max(self._seen_seq, mine[-1].seq)
        if not window.opened:
            return
        if window.add_live([ln for ln in lines if ln.execution_id == window.execution_id]):
            self._live_rows_changed()
        if window.tail_dirty:
            self._schedule_tail()

    def _live_rows_changed(self) -> None:
        """The rows changed by live lines: repaint now, or once the LIVE_REPAINT interval is up."""
        if self._live_pending:
            return
        wait = self._last_live_repaint + 1 / LIVE_REPAINT - time.monotonic()
        if wait <= 0:
            self._flush_live()
        else:
            self._live_pending = True
            self.set_timer(wait, self._flush_live)

    def _flush_live(self) -> None:
        self._live_pending = False
        self._last_live_repaint = time.monotonic()
        self._rows_changed()

    def add_dropped(self) -> None:
        if self.window is not None and self.window.opened:
            self.window.add_dropped()
            self._schedule_tail()

    def _schedule_tail(self) -> None:
        if not self._tail_pending:
            self._tail_pending = True
            # the store writer commits every ~100 ms: read a little after that
            self.set_timer(0.15, self._fetch_tail)

    @work(group="log-tail", exclusive=True)
    async def _fetch_tail(self) -> None:
        self._tail_pending = False
        window = self.window
        if window is None or not window.opened:
            # a window still opening reads its tail itself, then asks for this again
            return
        try:
            added = await window.fetch_tail()
        except Exception as exc:
            self.app.report_error(exc)  # type: ignore[attr-defined]
            return
        if window is not self.window:
            return
        if added:
            self._rows_changed()
        if window.last_seq < self._seen_seq:
            # the store writer has not committed everything the events showed yet: look again
            self._schedule_tail()

    def _rows_changed(self) -> None:
        self._update_virtual_size()
        if self.follow:
            self._scroll_to_tail()
        self.refresh()
        # the line count in the title: a few times a second is enough
        if not self._state_pending:
            self._state_pending = True
            self.set_timer(0.25, self._post_state)

    def _post_state(self) -> None:
        self._state_pending = False
        self.post_message(self.StateChanged(self))

    def _update_virtual_size(self) -> None:
        # the scroll position is a log row, and the last one is the tail's top: the scrollbar's end
        # is the end of the log even when rows take several screen rows (wrap) or none (a hidden
        # marker line), which `total` alone does not say
        height = self.total
        if self.wrap or not self.show_markers:
            height = self._tail_top() + self.scrollable_content_region.height
        # wider than the view only when a line is: no horizontal scrollbar otherwise
        width = 0 if self.wrap else self._max_width
        self.virtual_size = Size(width, height)

    # -- layout ----------------------------------------------------------------------------------
    def _text(self, row: int, line: LogLine) -> tuple[Text, bool]:
        """The line's text with its ANSI colours, and whether it is a marker line (cached)."""
        return self._cache.text(
            (row, line.seq), lambda: line_text(line.text, self.get_component_rich_style("log-view--marker")))

    def _decorated(self, row: int, line: LogLine) -> Text | None:
        text, marker = self._text(row, line)
        if marker and not self.show_markers:
            return None
        return decorated_line(
            line, text, wrap=self.wrap, timestamps=self.timestamps, labels=self._labels, label_width=self._label_width,
            search=self.search,
            match_style=self.get_component_rich_style("log-view--match") if self.search else None,
            match_line_style=self.get_component_rich_style("log-view--match-line") if row == self.match_row else None,
        )

    def _row_parts(self, row: int, line: LogLine, width: int) -> list[Text]:
        """The screen rows of one log row (cached for the current look)."""
        key = (row, line.seq)
        parts = self._cache.parts.get(key)
        if parts is not None:
            return parts
        text = self._decorated(row, line)
        if text is None:
            parts = []
        elif self.wrap and text.cell_len > width:
            parts = list(text.wrap(self.app.console, width, no_wrap=False))
            for part in parts:
                part.end = ""
        else:
            if text.cell_len > self._max_width:
                self._max_width = text.cell_len
                if text.cell_len > width:
                    self.call_later(self._update_virtual_size)
            parts = [text]
        self._cache.parts[key] = parts
        return parts

    def _compute_layout(self) -> list[tuple[int, tuple[int, int, int] | None, Text | None]]:
        """Screen rows: (log row, key of its strip, text of that screen row); key and text are None
        when the line is not loaded yet."""
        region = self.scrollable_content_region
        width = max(region.width, 1)
        height = region.height
        top = int(self.scroll_offset.y)
        look = (width, self.wrap, self.timestamps, self.show_markers, self.search, self.match_row, id(self.window),
                self._labels_version)
        key = (top, height, self.total, look)
        if key == self._layout_key:
            return self._screen_rows
        self._cache.set_look(look)
        out: list[tuple[int, tuple[int, int, int] | None, Text | None]] = []
        parts_in_view: dict[tuple[int, int], list[Text]] = {}
        window = self.window
        row = top
        missing_from: int | None = None
        while window is not None and len(out) < height and row < window.total:
            line = window.line(row)
            if line is None:
                missing_from = row if missing_from is None else missing_from
                out.append((row, None, None))
            else:
                parts = self._row_parts(row, line, width)
                parts_in_view[(row, line.seq)] = parts
                out.extend((row, (row, line.seq, i), part) for i, part in enumerate(parts))
            row += 1
        if window is not None:
            self._request_blocks(top, max(row, top + height))
        # only the rows in view stay cached: a followed tail would otherwise keep every line it passed
        self._cache.parts = parts_in_view
        self._screen_rows = out[:height]
        self._layout_key = key if missing_from is None else None
        return self._screen_rows

    def notify_style_update(self) -> None:
        super().notify_style_update()
        # the cached texts and strips carry the old theme's styles
        self._cache.clear()
        self._layout_key = None

    def render_lines(self, crop: Region) -> list[Strip]:
        # one layout and one base style for the frame, not a walk over the geometry and the
        # ancestors' styles for every line
        self._frame = (self._compute_layout(), self.rich_style)
        try:
            return super().render_lines(crop)
        finally:
            self._frame = None

    def render_line(self, y: int) -> Strip:
        layout, base = self._frame if self._frame is not None else (self._compute_layout(), self.rich_style)
        width = self.size.width
        if y >= len(layout):
            if y == 0 and self.window is not None and self.window.opened and self.total == 0:
                return text_strip(Text(" No output yet.", style="dim italic"), self.app.console, width, base)
            return Strip.blank(width, base)
        _row, key, text = layout[y]
        offset = 0 if self.wrap else int(self.scroll_offset.x)
        if text is None or key is None:
            text = Text(" …", style=self.get_component_rich_style("log-view--placeholder"))
            return text_strip(text, self.app.console, width, base, offset=offset)
        return self._cache.strip(key, (width, offset, base),
                                 lambda: text_strip(text, self.app.console, width, base, offset=offset),
                                 (k for _r, k, _t in layout), len(layout))

    def _request_blocks(self, first: int, last: int) -> None:
        window = self.window
        if window is None or not window.opened:
            return
        for k in window.blocks_missing(first, last):
            if k not in self._fetching:
                self._fetching.add(k)
                self._fetch_block(window, k)

    @work(group="log-blocks")
    async def _fetch_block(self, window: LogWindow, k: int) -> None:
        try:
            await window.fetch_block(k)
        except Exception as exc:
            self.app.report_error(exc)  # type: ignore[attr-defined]
        finally:
            self._fetching.discard(k)
        if window is self.window:
            self._layout_key = None
            if self.wrap or not self.show_markers:
                # the rows now known may take more or fewer screen rows than guessed
                self._update_virtual_size()
                if self.follow:
                    self._scroll_to_tail()
            self.refresh()

    def on_resize(self) -> None:
        self._layout_key = None
        self._update_virtual_size()
        if self.follow:
            self._scroll_to_tail()

    def watch_scroll_y(self, old: float, new: float) -> None:
        self._layout_key = None
        super().watch_scroll_y(old, new)
        # moved up by the scrollbar (a drag, a click on its track): the view stops following, as
        # it does for a key or the wheel; else the next block read would bring the tail back
        if self.follow and not self._to_tail and new < old and int(new) < self._tail_top():
            self.follow = False

    # -- follow and scrolling --------------------------------------------------------------------
    def _tail_top(self) -> int:
        """The top row that shows the last line at the bottom."""
        return self._top_above(self.total - 1, self.scrollable_content_region.height)

    def _top_above(self, last: int, height: int) -> int:
        """The top row that shows row `last` on the last of `height` screen rows (rows not loaded
        yet count as one screen row)."""
        window = self.window
        if window is None or last < 0:
            return 0
        if not self.wrap and self.show_markers:
            return max(last - height + 1, 0)
        width = max(self.scrollable_content_region.width, 1)
        used = 0
        row = last
        while row >= 0:
            rows = self._screen_rows_of(row, width)
            if used + rows > height:
                return row + 1
            used += rows
            row -= 1
        return 0

    def _screen_rows_of(self, row: int, width: int) -> int:
        """How many screen rows a log row takes: 0 for a hidden marker line, several when wrapped."""
        line = self.window.line(row) if self.window is not None else None
        if line is None:
            return 1
        text = self._decorated(row, line)
        if text is None:
            return 0
        if self.wrap and text.cell_len > width:
            return max(len(text.wrap(self.app.console, width, no_wrap=False)), 1)
        return 1

    def _scroll_to_tail(self) -> None:
        self._to_tail = True
        try:
            self.scroll_to(y=self._tail_top(), animate=False, immediate=True, force=True)
        finally:
            self._to_tail = False

    def _user_scroll(self, y: int) -> None:
        tail = self._tail_top()
        top = max(min(y, tail), 0)
        self.scroll_to(y=top, animate=False, immediate=True, force=True)
        at_tail = top >= tail
        if self.follow != at_tail:
            self.follow = at_tail

    def action_scroll_rows(self, delta: int) -> None:
        top = int(self.scroll_offset.y)
        if self.show_markers:
            self._user_scroll(top + delta)
            return
        # a hidden marker line takes no screen row: one step moves past it to a line that shows
        width = max(self.scrollable_content_region.width, 1)
        step = 1 if delta > 0 else -1
        for _ in range(abs(delta)):
            top += step
            while 0 < top < self.total - 1 and self._screen_rows_of(top, width) == 0:
                top += step
        self._user_scroll(top)

    def action_page(self, direction: int) -> None:
        top = int(self.scroll_offset.y)
        height = max(self.scrollable_content_region.height, 2)
        if self.wrap or not self.show_markers:
            # by screen rows, keeping one line of the old page in view
            layout = self._compute_layout()
            if direction > 0:
                self._user_scroll(layout[-1][0] if len(layout) >= height else top + height - 1)
            else:
                self._user_scroll(self._top_above(top, height) if top > 0 else 0)
            return
        self._user_scroll(top + direction * (height - 1))

    def action_top(self) -> None:
        self._user_scroll(0)

    def action_bottom(self) -> None:
        self.follow = True

    async def on_key(self, event: events.Key) -> None:
        # A key the view does not consume reaches the bindings only once it has bubbled up to the
        # app, through the six containers above the view: one turn of the event loop each, and
        # during live follow a turn may hold a frame or a batch of events. Nothing on that way
        # handles keys, so the same lookup (this view's bindings, its ancestors', the app's) is
        # done here, at once.
        # `_check_bindings` is Textual's own (8.x); without it the key simply bubbles as usual
        check = getattr(self.app, "_check_bindings", None)
        if check is not None and await check(event.key):
            event.stop()
            event.prevent_default()

    def _on_mouse_scroll_up(self, event) -> None:
        if self.follow:
            self.follow = False

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._scroll_to_tail()
        self.post_message(self.StateChanged(self))

    def action_toggle_timestamps(self) -> None:
        self.timestamps = not self.timestamps

    def action_toggle_wrap(self) -> None:
        self.wrap = not self.wrap

    def action_toggle_markers(self) -> None:
        self.show_markers = not self.show_markers

    def action_markers(self, show: bool) -> None:
        self.show_markers = show

    def _view_changed(self) -> None:
        self._layout_key = None
        self._update_virtual_size()
        if self.follow:
            self._scroll_to_tail()
        self.refresh()
        self.post_message(self.StateChanged(self))

    watch_timestamps = watch_wrap = lambda self, _value: self._view_changed()  # noqa: E731

    def watch_show_markers(self, _value: bool) -> None:
        self._view_changed()
        self.refresh_bindings()  # the footer's m says the other state now

    # -- search ----------------------------------------------------------------------------------
    def set_search(self, needle: str) -> None:
        self.search = needle
        self.match_row = None
        self._layout_key = None
        self.refresh()
        if needle:
            self.follow = False
            self._find(needle, int(self.scroll_offset.y) - 1, 1)
        self.post_message(self.StateChanged(self))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next_match":
            # without a search, `n` is free for the app (launch)
            return bool(self.search)
        if action == "markers":
            return parameters[0] != self.show_markers
        return True

    def action_next_match(self, direction: int) -> None:
        if not self.search:
            return
        start = self.match_row if self.match_row is not None else int(self.scroll_offset.y)
        self.follow = False
        self._find(self.search, start, direction)

    @work(group="log-search", exclusive=True)
    async def _find(self, needle: str, start: int, direction: int) -> None:
        window = self.window
        if window is None:
            return
        self.searching = True
        self.post_message(self.StateChanged(self))
        try:
            row = await window.search(needle, start, forward=direction > 0)
            wrapped = False
            if row is None:
                wrapped = True
                row = await window.search(needle, -1 if direction > 0 else window.total, forward=direction > 0)
        except Exception as exc:
            self.app.report_error(exc)  # type: ignore[attr-defined]
            return
        finally:
            self.searching = False
        if window is not self.window or needle != self.search:
            return
        if row is None:
            self.app.notify(f"No match for {needle!r}", severity="warning", timeout=3)
        else:
            if wrapped:
                self.app.notify("Search wrapped around", timeout=2)
            self.match_row = row
            # the match with a few lines of context above it
            self.scroll_to(y=max(row - max(self.size.height // 3, 1), 0), animate=False, immediate=True, force=True)
        self._layout_key = None
        self.refresh()
        self.post_message(self.StateChanged(self))

    def status_text(self) -> str:
        parts = [f"{self.total:,} line{'' if self.total == 1 else 's'}"]
        parts.append("following" if self.follow else "paused")
        if self.wrap:
            parts.append("wrap")
        if self.timestamps:
            parts.append("times")
        if not self.show_markers:
            parts.append("no markers")
        if self.search:
            state = "searching…" if self.searching else (
                f"match at line {self.match_row + 1:,}" if self.match_row is not None else "no match")
            parts.append(f"/{self.search}: {state}")
        return " · ".join(parts)

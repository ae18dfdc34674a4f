"""The executions list: a virtual table over the engine's paged `list_executions`.

Only the pages on screen are fetched (100 rows each, a few kept), so 10,000 executions open as
fast as 10. Status, progress and counters change in place from events; new or deleted executions
reload the pages on screen.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from engine.admission import is_queued, queue_places, stored_queue
from engine.events import (
    Event,
    ExecutionCreated,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
)
from engine.model import Execution, ExecutionFilter, ExecutionStatus
from stepflow_tui import formatting
from stepflow_tui.display import duration_between, fmt_started, progress_text, status_glyph, truncate
from stepflow_tui.widgets.strips import text_strip

PAGE = 100
MAX_PAGES = 8


#: the id's first characters, as `stepflow show` and `logs` take them
SHORT_ID = 8


@dataclass(frozen=True, slots=True)
class Columns:
    name: int
    targets: int
    progress: int = 10
    steps: int = 7
    started: int = 11
    duration: int = 8

    @classmethod
    def for_width(cls, width: int) -> Columns:
        # glyph, id, progress, steps, started, duration and the spaces between them: the name and
        # the targets share the rest, the targets going first at narrow widths
        fixed = 2 + SHORT_ID + 1 + 10 + 7 + 11 + 8 + 5
        targets = 12 if width - fixed >= 40 else (0 if width - fixed < 30 else 8)
        name = max(width - fixed - (targets + 1 if targets else 0), 8)
        return cls(name=name, targets=targets)


def parse_filter(text: str) -> ExecutionFilter:
    """`failed`, `status:failed`, `deploy`, `failed deploy` -> a filter on status and/or text."""
    status: ExecutionStatus | None = None
    words = []
    for word in text.split():
        value = word.removeprefix("status:").removeprefix("s:").lower()
        try:
            status = ExecutionStatus(value)
            continue
        except ValueError:
            words.append(word)
    return ExecutionFilter(status=status, text=" ".join(words) or None, limit=PAGE)


class ExecutionListHeader(Widget):
    DEFAULT_CSS = """
    ExecutionListHeader { height: 1; text-style: bold; }
    """

    def render(self) -> Text:
        return header_text(Columns.for_width(self.size.width))


def header_text(cols: Columns) -> Text:
    parts = ["  ", "Id".ljust(SHORT_ID), " ", "Name".ljust(cols.name)]
    if cols.targets:
        parts += [" ", "Target".ljust(cols.targets)]
    parts += [" ", "Progress".ljust(cols.progress), " ", "Steps".rjust(cols.steps), " ",
              "Started".ljust(cols.started), " ", "Duration".rjust(cols.duration)]
    return Text("".join(parts))


def row_text(ex: Execution, cols: Columns, now, place: int | None = None) -> Text:
    """One execution's row; `place`: a queued one's place in the queue (`queued #3`)."""
    glyph, style = status_glyph(ex.status.value)
    text = Text()
    text.append(glyph, style=style)
    text.append(" ")
    text.append(ex.id[:SHORT_ID].ljust(SHORT_ID), style="dim")
    text.append(" ")
    text.append(truncate(ex.name, cols.name).ljust(cols.name))
    if cols.targets:
        text.append(" ")
        text.append(truncate(",".join(ex.targets), cols.targets).ljust(cols.targets), style="dim")
    text.append(" ")
    if ex.status is ExecutionStatus.PENDING:
        waiting = f"queued #{place}" if place is not None else "pending"
        text.append(waiting.ljust(cols.progress), style="dim")
    else:
        bar_style = {"completed": "green", "failed": "red", "cancelled": "magenta"}.get(ex.status.value, "cyan")
        text.append_text(progress_text(ex.progress_percentage, cols.progress - 5, bar_style))
    text.append(" ")
    steps = f"{ex.completed_steps}/{ex.total_steps}" if ex.total_steps else ""
    text.append(steps.rjust(cols.steps))
    text.append(" ")
    text.append(fmt_started(ex.started_at or ex.created_at, now).ljust(cols.started))
    text.append(" ")
    text.append(formatting.duration(duration_between(ex.started_at, ex.completed_at, now)).rjust(cols.duration))
    return text


class ExecutionList(ScrollView, can_focus=True):
    """Newest first. `enter` opens the execution under the cursor."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False, id="list.up"),
        Binding("down,j", "cursor(1)", "Down", show=False, id="list.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="list.page_up"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="list.page_down"),
        Binding("home,g", "first", "First", show=False, id="list.first"),
        Binding("end,G", "last", "Last", show=False, id="list.last"),
        Binding("enter", "open", "Open", id="list.open"),
    ]

    COMPONENT_CLASSES = {"execution-list--cursor", "execution-list--placeholder"}

    DEFAULT_CSS = """
    ExecutionList > .execution-list--cursor { background: $accent 40%; }
    ExecutionList:focus > .execution-list--cursor { background: $accent; }
    ExecutionList > .execution-list--placeholder { color: $text-muted; }
    """

    cursor: reactive[int] = reactive(0, always_update=True, repaint=False)

    @dataclass
    class Highlighted(Message):
        execution: Execution | None

    @dataclass
    class Opened(Message):
        execution: Execution

    @dataclass
    class Loaded(Message):
        """The count or the pages on screen changed (total after the filter)."""

        total: int

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.filter = ExecutionFilter(limit=PAGE)
        self.total = 0
        self.loaded = False
        self._pages: OrderedDict[int, list[Execution]] = OrderedDict()
        self._fetching: set[int] = set()
        self._generation = 0
        self._reload_pending = False
        #: queued executions' places in the queue (all of them, not only those loaded)
        self._places: dict[str, int] = {}

    # -- data ------------------------------------------------------------------------------------
    @property
    def client(self):
        return self.app.client  # type: ignore[attr-defined]

    def on_mount(self) -> None:
        self.reload()

    def set_filter(self, flt: ExecutionFilter) -> None:
        self.filter = dataclasses.replace(flt, limit=PAGE, offset=0)
        self.cursor = 0
        self.scroll_to(y=0, animate=False, force=True)
        self.reload()

    def reload(self) -> None:
        """Refetch the count and the pages on screen (drops the others)."""
        self._generation += 1
        self._fetching.clear()
        first = int(self.scroll_offset.y) // PAGE
        last = (int(self.scroll_offset.y) + max(self.size.height, 1)) // PAGE
        pages = sorted({first, last, self.cursor // PAGE})
        self._load(pages, self._generation, reset=True)

    @work(group="execution-list", exclusive=False)
    async def _load(self, pages: list[int], generation: int, reset: bool = False) -> None:
        try:
            results = {}
            total = self.total
            for page in pages:
                flt = dataclasses.replace(self.filter, offset=page * PAGE, limit=PAGE)
                rows, total = await self.client.list_executions(flt)
                results[page] = rows
            queued = any(is_queued(ex) for rows in results.values() for ex in rows)
            places = queue_places(await stored_queue(self.client)) if queued else {}
        except Exception as exc:
            self.app.report_error(exc)  # type: ignore[attr-defined]
            return
        finally:
            for page in pages:
                self._fetching.discard(page)
        if generation != self._generation:
            return
        if reset:
            self._pages.clear()
        self._places = places
        live = getattr(self.app, "live", None)
        for page, rows in results.items():
            self._pages[page] = [live.newest(ex) for ex in rows] if live is not None else rows
        while len(self._pages) > MAX_PAGES:
            self._pages.popitem(last=False)
        self.total = total
        self.loaded = True
        self.virtual_size = Size(self.size.width, total)
        if self.cursor >= total:
            self.cursor = max(total - 1, 0)
        self.refresh()
        self.post_message(self.Loaded(total))
        self.post_message(self.Highlighted(self.current))

    def row(self, index: int) -> Execution | None:
        page = self._pages.get(index // PAGE)
        if page is None:
            return None
        i = index % PAGE
        return page[i] if i < len(page) else None

    @property
    def current(self) -> Execution | None:
        return self.row(self.cursor) if self.total else None

    def apply_events(self, events: list[Event]) -> None:
        changed = False
        reload = False
        for ev in events:
            if isinstance(ev, ExecutionCreated | ExecutionDeleted):
                reload = True
            elif isinstance(ev, ExecutionStarted | ExecutionUpdated | ExecutionFinished):
                if self.filter.status is not None and ev.execution.status is not self.filter.status:
                    reload = reload or self._index_of(ev.execution.id) is not None
                    if isinstance(ev, ExecutionFinished | ExecutionStarted):
                        reload = True
                    continue
                changed = self._patch(ev.execution) or changed
                if ev.execution.id in self._places and not is_queued(ev.execution):
                    reload = True  # it left the queue: the others moved up
        if reload:
            self._schedule_reload()
            # the store may commit a new execution a moment after its event: look once more
            self.set_timer(0.5, self._schedule_reload)
        elif changed:
            self.refresh()
            if self.current is not None:
                self.post_message(self.Highlighted(self.current))

    def _index_of(self, execution_id: str) -> int | None:
        for page, rows in self._pages.items():
            for i, ex in enumerate(rows):
                if ex.id == execution_id:
                    return page * PAGE + i
        return None

    def _patch(self, execution: Execution) -> bool:
        for rows in self._pages.values():
            for i, ex in enumerate(rows):
                if ex.id == execution.id:
                    rows[i] = execution
                    return True
        return False

    def _schedule_reload(self) -> None:
        # a burst of creations becomes one reload
        if not self._reload_pending:
            self._reload_pending = True
            self.set_timer(0.05, self._do_reload)

    def _do_reload(self) -> None:
        self._reload_pending = False
        self.reload()

    # -- painting -------------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        index = int(self.scroll_offset.y) + y
        width = self.size.width
        base = self.rich_style
        if index >= self.total:
            if index == 0 and self.loaded:
                msg = "No executions match the filter." if self._filtered else \
                    "No executions yet. Press n to launch a workflow or a command."
                return text_strip(Text(msg, style="dim italic"), self.app.console, width, base)
            return Strip.blank(width, base)
        ex = self.row(index)
        if ex is None:
            self._request(index // PAGE)
            style = self.get_component_rich_style("execution-list--placeholder")
            return text_strip(Text("  …", style=style), self.app.console, width, base)
        text = row_text(ex, Columns.for_width(width), self.app.now(),  # type: ignore[attr-defined]
                        self._places.get(ex.id))
        if index == self.cursor:
            text.stylize(self.get_component_rich_style("execution-list--cursor"))
        return text_strip(text, self.app.console, width, base)

    @property
    def _filtered(self) -> bool:
        return self.filter.status is not None or bool(self.filter.text)

    def _request(self, page: int) -> None:
        if page in self._fetching:
            return
        self._fetching.add(page)
        self._load([page], self._generation)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, self.total)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)

    def tick(self) -> None:
        """Durations of running executions move: repaint once a second."""
        if any(ex.status is ExecutionStatus.RUNNING for rows in self._pages.values() for ex in rows):
            self.refresh()

    # -- cursor ----------------------------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        height = max(self.size.height, 1)
        top = int(self.scroll_offset.y)
        if new < top:
            self.scroll_to(y=new, animate=False, force=True)
        elif new >= top + height:
            self.scroll_to(y=new - height + 1, animate=False, force=True)
        self.post_message(self.Highlighted(self.current))

    def _move(self, to: int) -> None:
        if self.total:
            self.cursor = min(max(to, 0), self.total - 1)

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move(self.cursor + direction * max(self.size.height - 1, 1))

    def action_first(self) -> None:
        self._move(0)

    def action_last(self) -> None:
        self._move(self.total - 1)

    def action_open(self) -> None:
        ex = self.current
        if ex is not None:
            self.post_message(self.Opened(ex))

    def on_click(self, event) -> None:
        index = int(self.scroll_offset.y) + event.y
        if 0 <= index < self.total:
            if index == self.cursor and getattr(event, "chain", 1) >= 2:
                self.action_open()
            self.cursor = index

    def select_id(self, execution_id: str) -> bool:
        index = self._index_of(execution_id)
        if index is None:
            return False
        self.cursor = index
        return True

"""The first screen: every execution, newest first, filtered with `/`."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Input, Static

from engine.events import Event
from engine.model import Execution
from stepflow_tui.screens.actions import EXECUTION_BINDINGS, ExecutionActions
from stepflow_tui.widgets.execution_list import ExecutionList, ExecutionListHeader, parse_filter
from stepflow_tui.widgets.footer import FittingFooter
from stepflow_tui.widgets.status_strip import StatusStrip


class ExecutionsScreen(ExecutionActions):
    BINDINGS = [
        Binding("slash", "filter", "Filter", id="executions.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="executions.clear_filter"),
        *EXECUTION_BINDINGS,
    ]

    def __init__(self) -> None:
        super().__init__()
        #: the engine's events from before the list was composed (on a loaded machine the engine
        #: can outrun the first screen): the list gets them once it is there
        self._early_events: list[Event] = []

    def compose(self) -> ComposeResult:
        yield Static(id="list-title", classes="screen-title")
        yield ExecutionListHeader()
        yield ExecutionList(id="executions")
        yield Input(placeholder="filter: text, or a status (running, failed…); esc clears", id="list-filter",
                    classes="hidden")
        yield StatusStrip(self.app.data_dir_label, sample_machine=self.app.sample_machine)  # type: ignore[attr-defined]
        yield FittingFooter()

    def on_mount(self) -> None:
        self.query_one(ExecutionList).focus()
        self._update_title()
        self.apply_events([])

    @property
    def execution_list(self) -> ExecutionList:
        return self.query_one(ExecutionList)

    def current_execution(self) -> Execution | None:
        return self.execution_list.current

    def apply_events(self, events: list[Event]) -> None:
        execution_list = next(iter(self.query(ExecutionList)), None)
        if execution_list is None:
            if not self.is_mounted:
                self._early_events.extend(events)
            return  # else it is gone: quitting
        if self._early_events:
            events, self._early_events = [*self._early_events, *events], []
        if events:
            execution_list.apply_events(events)

    def tick(self) -> None:
        # the app's timer can come before the list is composed (a start slower than its 1 s period,
        # as on a loaded machine) or after it is gone (quitting): nothing to tick then
        for execution_list in self.query(ExecutionList):
            execution_list.tick()

    def _update_title(self) -> None:
        lst = self.execution_list
        text = Text(" Executions", style="bold")
        if lst.loaded:
            text.append(f"  {lst.total:,}", style="dim")
        flt = lst.filter
        if flt.status is not None or flt.text:
            text.append("  filter: ", style="dim")
            text.append(" ".join(x for x in (flt.status.value if flt.status else "", flt.text or "") if x),
                        style="bold yellow")
            text.append("  (esc clears)", style="dim")
        self.query_one("#list-title", Static).update(text)

    @on(ExecutionList.Loaded)
    def _loaded(self) -> None:
        self._update_title()
        self._refresh_footer()

    @on(ExecutionList.Highlighted)
    def _highlighted(self) -> None:
        self._refresh_footer()

    def _refresh_footer(self) -> None:
        # under an execution view the list still follows the events, but its footer is not seen:
        # rebuilding it there costs the live view a frame (Textual refreshes it on resume)
        if self.is_current:
            self.refresh_bindings()

    @on(ExecutionList.Opened)
    def _opened(self, event: ExecutionList.Opened) -> None:
        self.app.open_execution(event.execution)  # type: ignore[attr-defined]

    def action_filter(self) -> None:
        box = self.query_one("#list-filter", Input)
        box.remove_class("hidden")
        box.focus()

    @on(Input.Changed, "#list-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.execution_list.set_filter(parse_filter(event.value))
        self._update_title()

    @on(Input.Submitted, "#list-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        event.stop()
        box = self.query_one("#list-filter", Input)
        if not box.value:
            box.add_class("hidden")
        self.execution_list.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#list-filter", Input)
        had = bool(box.value)
        box.value = ""
        box.add_class("hidden")
        if had:
            self.execution_list.set_filter(parse_filter(""))
        self.execution_list.focus()
        self._update_title()

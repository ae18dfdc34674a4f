"""One execution: the tree on the left; the log (or the artifacts) on the right."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.widgets import Input, Static, TabbedContent, TabPane

from engine.events import (
    ArtifactAdded,
    ArtifactDeleted,
    Event,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
    LinesDropped,
    LinesLogged,
    StepAdded,
    StepFinished,
    StepStarted,
    StepUpdated,
)
from engine.model import Execution, ExecutionStatus, Step
from stepflow_tui import formatting
from stepflow_tui.display import duration_between, progress_text, status_glyph
from stepflow_tui.screens.actions import EXECUTION_BINDINGS, ExecutionActions
from stepflow_tui.widgets.artifact_pane import ArtifactPane, ArtifactTable
from stepflow_tui.widgets.footer import FittingFooter
from stepflow_tui.widgets.log_view import LogView
from stepflow_tui.widgets.status_strip import StatusStrip
from stepflow_tui.widgets.step_tree import StepTree, step_detail

#: the tree pane's share of the screen's width at most, and its width at least
TREE_SHARE = 0.4
TREE_MIN = 24


class ExecutionScreen(ExecutionActions):
    BINDINGS = [
        Binding("escape", "back", "Back", id="execution.back"),
        Binding("slash", "search", "Search", id="log.search"),
        Binding("a", "toggle_artifacts", "Artifacts", id="execution.artifacts"),
        Binding("l", "focus_log", "Log", show=False, id="execution.focus_log"),
        Binding("T", "focus_tree", "Tree", show=False, id="execution.focus_tree"),
        # Textual's maximize (escape restores, as in Textual's palette): the tree at full width
        # shows every name at 80 columns, the log at full width its long lines
        Binding("z", "zoom", "Zoom pane", show=False, id="execution.zoom"),
        *EXECUTION_BINDINGS,
    ]

    def __init__(self, execution: Execution) -> None:
        super().__init__()
        self.execution = execution
        self.steps: dict[str, Step] = {}
        self._filter_step: Step | None = None
        #: the tree pane's width so far: it grows to show the names, never shrinks while open
        self._tree_width = 0
        #: the widgets are mounted (the tabs mount theirs a moment after the screen)
        self._ready = False

    def compose(self) -> ComposeResult:
        yield Static(id="execution-title", classes="screen-title")
        with Horizontal(id="execution-body"):
            with Vertical(id="tree-column"):
                yield StepTree(id="step-tree")
                yield Static(id="step-detail")
            with TabbedContent(id="execution-tabs"):
                with TabPane("Log", id="tab-log"):
                    with Vertical():
                        yield Static(id="log-status", classes="pane-status")
                        yield LogView(id="log")
                        yield Input(placeholder="search the log (enter: find, n/N: next/previous)",
                                    id="log-search", classes="hidden")
                with TabPane("Artifacts", id="tab-artifacts"):
                    yield ArtifactPane(id="artifacts")
        yield StatusStrip(self.app.data_dir_label, sample_machine=self.app.sample_machine)  # type: ignore[attr-defined]
        yield FittingFooter()

    def on_mount(self) -> None:
        self._update_title()
        # the tabs mount their panes a moment after the screen
        self.call_after_refresh(self._start)

    def _start(self) -> None:
        self._ready = True
        self._load()
        log = self.log_view
        if log.window is None:
            log.show(self.execution.id)
        log.focus()

    @property
    def log_view(self) -> LogView:
        return self.query_one(LogView)

    @property
    def step_tree(self) -> StepTree:
        return self.query_one(StepTree)

    def current_execution(self) -> Execution | None:
        return self.execution

    @work(group="execution-load", exclusive=True)
    async def _load(self) -> None:
        client = self.app.client  # type: ignore[attr-defined]
        try:
            execution = await client.get_execution(self.execution.id)
            steps = await client.get_steps(self.execution.id)
        except Exception as exc:
            self.app.report_error(exc)  # type: ignore[attr-defined]
            return
        if execution is not None:
            self.execution = execution
        # what the events told (before this screen opened, or while reading) wins over the store
        live = self.app.live.get(self.execution.id)  # type: ignore[attr-defined]
        if live is not None:
            if live.execution is not None:
                self.execution = live.execution
            steps = [live.steps.get(s.id, s) for s in steps]
            steps += [s for s in live.steps.values() if s.id not in {x.id for x in steps}]
        for step in steps:
            self.steps[step.id] = step
        try:
            self.step_tree.set_steps(self.steps.values())
            self.log_view.set_steps(list(self.step_tree.steps.values()))
            self._fit_tree()
            self._update_title()
            self.query_one(ArtifactPane).show(self.execution.id, {s.id: s.name for s in self.steps.values()})
        except NoMatches:
            return  # closed (back, quit) while reading: its widgets are being removed

    # -- events ----------------------------------------------------------------------------------
    def apply_events(self, events: list[Event]) -> None:
        try:
            self._apply_events(events)
        except NoMatches:
            return  # being closed (or recomposed): its widgets are not there now

    def _apply_events(self, events: list[Event]) -> None:
        my_id = self.execution.id
        lines = []
        title = False
        artifacts = False
        steps = False
        for ev in events:
            if ev.execution_id != my_id:
                continue
            if isinstance(ev, LinesLogged):
                lines.extend(ev.log_lines())
            elif isinstance(ev, StepAdded | StepStarted | StepUpdated | StepFinished):
                self.steps[ev.step.id] = ev.step
                if self._ready:
                    steps = True
                    self.step_tree.update_step(ev.step)
                    if isinstance(ev, StepAdded):
                        self._step_added(ev.step)
                        self.log_view.set_steps(list(self.step_tree.steps.values()))
            elif isinstance(ev, ExecutionStarted | ExecutionUpdated | ExecutionFinished):
                self.execution = ev.execution
                title = True
                # the end comes once the store holds everything before it: its artifacts too
                artifacts = artifacts or isinstance(ev, ExecutionFinished)
            elif isinstance(ev, LinesDropped) and self._ready:
                self.log_view.add_dropped()
            elif isinstance(ev, ArtifactAdded | ArtifactDeleted):
                # the app's live cache has them; the pane merges it with the store's list
                artifacts = True
            elif isinstance(ev, ExecutionDeleted):
                self.notify(f"{self.execution.name} was deleted")
                self.dismiss()
                return
        if not self._ready:
            return
        if lines:
            self.log_view.add_live(lines)
        if steps:
            self._fit_tree()
        if artifacts:
            self.query_one(ArtifactPane).changed({s.id: s.name for s in self.steps.values()})
        if title:
            self._update_title()
            self.refresh_bindings()

    def _step_added(self, step: Step) -> None:
        # a new sub-step of the node the log is filtered to: widen the filter (at the tail)
        window = self.log_view.window
        if self._filter_step is not None and window is not None and step.parent_id in (window.step_ids or ()):
            if self.log_view.follow:
                self.log_view.show(self.execution.id, self.step_tree.subtree_ids(self._filter_step.id))

    def tick(self) -> None:
        if not self._ready:
            return
        try:
            self.step_tree.tick()
            self._fit_tree()
            if self.execution.status is ExecutionStatus.RUNNING:
                self._update_title()
        except NoMatches:
            return  # being closed (or recomposed): its widgets are not there now

    def on_unmount(self) -> None:
        self._ready = False

    def on_resize(self) -> None:
        self._tree_width = 0
        self._fit_tree()

    def _fit_tree(self) -> None:
        """The tree pane takes the width its names and durations need, up to TREE_SHARE of the
        screen (at least TREE_MIN): at 80 columns the log keeps 48."""
        if not self._ready:
            return
        # + the scrollbar and the border
        wanted = self.step_tree.wanted_width() + 2
        width = max(TREE_MIN, min(wanted, int(self.size.width * TREE_SHARE)))
        if width > self._tree_width:
            self._tree_width = width
            self.query_one("#tree-column").styles.width = width

    def _update_title(self) -> None:
        ex = self.execution
        glyph, style = status_glyph(ex.status.value)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f" {glyph} ", style=style)
        text.append(ex.name, style="bold")
        text.append(f"  {ex.status.value}", style=style)
        duration = duration_between(ex.started_at, ex.completed_at, self.app.now())  # type: ignore[attr-defined]
        if duration is not None:
            text.append(f"  {formatting.duration(duration)}")
        if ex.total_steps:
            text.append(f"  {ex.completed_steps}/{ex.total_steps} steps  ")
            text.append_text(progress_text(ex.progress_percentage, 10))
        if ex.exit_code is not None and ex.status.is_terminal:
            text.append(f"  exit {ex.exit_code}", style="dim")
        if ex.error_message and ex.status is ExecutionStatus.FAILED:
            text.append(f"  {ex.error_message}", style="red")
        text.append(f"  {ex.id[:8]}", style="dim")
        self.query_one("#execution-title", Static).update(text)

    @on(LogView.StateChanged)
    def _log_state(self, event: LogView.StateChanged) -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        where = self._filter_step.name if self._filter_step else "all steps"
        text.append(f" {where}", style="bold")
        text.append(" · " + event.log_view.status_text(), style="dim")
        self.query_one("#log-status", Static).update(text)

    @on(StepTree.Highlighted)
    def _step_highlighted(self, event: StepTree.Highlighted) -> None:
        detail = self.query_one("#step-detail", Static)
        if event.step is None:
            detail.update(Text("enter on a node shows its lines only", style="dim"))
        else:
            detail.update(step_detail(event.step, self.app.now()))  # type: ignore[attr-defined]

    @on(StepTree.Selected)
    def _step_selected(self, event: StepTree.Selected) -> None:
        self._filter_step = event.step
        self.log_view.show(self.execution.id, event.step_ids)
        if self.log_view.search:
            self.log_view.set_search(self.log_view.search)

    # -- actions -----------------------------------------------------------------------------------
    def action_back(self) -> None:
        box = self.query_one("#log-search", Input)
        if box.has_focus:
            # escape in the search box closes the box first
            box.add_class("hidden")
            self.log_view.focus()
            return
        self.dismiss()

    def action_search(self) -> None:
        self.query_one(TabbedContent).active = "tab-log"
        box = self.query_one("#log-search", Input)
        box.remove_class("hidden")
        box.value = self.log_view.search
        box.focus()

    @on(Input.Submitted, "#log-search")
    def _search(self, event: Input.Submitted) -> None:
        event.stop()
        self.query_one("#log-search", Input).add_class("hidden")
        self.log_view.set_search(event.value)
        self.log_view.focus()

    def action_toggle_artifacts(self) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active == "tab-artifacts":
            tabs.active = "tab-log"
            self.log_view.focus()
        else:
            tabs.active = "tab-artifacts"
            self.query_one(ArtifactTable).focus()

    def action_focus_log(self) -> None:
        self.query_one(TabbedContent).active = "tab-log"
        self.log_view.focus()

    def action_focus_tree(self) -> None:
        self.step_tree.focus()

    def action_zoom(self) -> None:
        """The focused pane (tree, log or artifacts) fills the screen; again (or escape) restores."""
        if self.maximized is not None:
            self.minimize()
            return
        focused = self.focused
        if focused is not None:
            self.maximize(focused, container=False)

    @on(ArtifactTable.SaveRequested)
    def _save(self, event: ArtifactTable.SaveRequested) -> None:
        self.app.save_artifact(event.artifact)  # type: ignore[attr-defined]

"""What the CLI prints: the live progress of `run`/`exec`; the tree of `show` and the table of `ls`
are stepflow_tui.cli.read_views' (imported here too, under their names of old)."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.markup import escape
from rich.text import Text

from engine.events import (
    Event,
    ExecutionFinished,
    LinesLogged,
    Notice,
    StepAdded,
    StepFinished,
    StepStarted,
    StepUpdated,
)
from engine.markers import MarkerParser
from engine.model import TERMINAL_STEP, Execution, ExecutionStatus, Step, StepKind, StepStatus, Stream
from stepflow_tui import formatting
from stepflow_tui.cli.read_views import (  # noqa: F401 - the names the CLI's modules use
    GLYPHS,
    MIN_NAME_WIDTH,
    PROGRESS_WIDTH,
    CliConsole,
    fmt_time,
    glyph,
    ordered_tree,
    plural,
    reader_gone,
    render_list,
    render_show,
    step_line,
)

if TYPE_CHECKING:
    from rich.live import Live

#: lines kept per step for the summary of a failed one
FAILED_TAIL = 20
#: finished marker steps the live tree shows under each parent (the latest); the others are counted
FINISHED_SHOWN = 3
#: failed marker steps whose last lines the summary shows (the latest)
FAILED_SHOWN = 10
#: seconds between two redraws of the live display for log lines alone
LINES_RENDER_INTERVAL = 0.1

#: the members the printer compares a step's kind and status with, a dozen times per marker step:
#: `StepKind.BRANCH` (an Enum's member, through its class) costs ~0.1 µs on Python 3.11, a name 10 ns
_BRANCH, _MARKER = StepKind.BRANCH, StepKind.MARKER
_RUNNING, _COMPLETED, _FAILED = StepStatus.RUNNING, StepStatus.COMPLETED, StepStatus.FAILED

#: texts of step durations kept for the next step that took as long, at most
DURATIONS_KEPT = 1_024

#: by step status: its glyph, the glyph's style, its text, whether it is terminal (a plain line
#: per step start and end, thousands a second: a status's `value` and `is_terminal` are calls)
STATUS_LINE: dict[StepStatus, tuple[str, str, str, bool]] = {
    status: (*glyph(status.value), status.value, status in TERMINAL_STEP) for status in StepStatus
}


class ProgressPrinter:
    """Follows one execution's events and shows them: a live tree on a terminal, plain lines
    otherwise (one per step start/finish, and the command's output with `verbose`).

    A command may print millions of marker steps: what is kept is bounded. The tree holds the
    execution's own steps, the open marker steps and the last FINISHED_SHOWN finished under each
    parent (the earlier ones are counted); the summary's tails, the last FAILED_SHOWN failed ones.
    `stepflow show` reads the whole tree from the store."""

    def __init__(self, execution: Execution, steps: list[Step], *, console: Console | None = None,
                 live: bool | None = None, verbose: bool = False) -> None:
        self.console = console or CliConsole(stderr=False, highlight=False)
        self.execution = execution
        self.steps: dict[str, Step] = {s.id: s for s in steps}
        self.live_mode = self.console.is_terminal if live is None else live
        if not self.live_mode:
            # plain lines are for logs and pipes: one event, one line, never broken at 80 columns
            self.console.soft_wrap = True
        self.verbose = verbose
        self.tail: deque[tuple[str | None, str]] = deque(maxlen=8)
        #: the last lines of each open step (and of failed ones, for the summary), by step id
        #: (a step's first block as it came, a tuple: most steps have one; a deque from the second)
        self.failed_tails: dict[str, deque[str] | tuple[str, ...]] = {}
        #: per parent id, the finished marker steps the tree still shows, oldest first
        self._finished: dict[str | None, deque[str]] = {}
        #: per parent id, how many finished marker steps left the tree
        self._hidden: dict[str | None, int] = {}
        #: the latest failed marker steps, with their path (their parents may have left the tree)
        self._failed_markers: OrderedDict[str, tuple[Step, str]] = OrderedDict()
        self._failed_marker_count = 0
        self._live: Live | None = None
        self._started = time.monotonic()
        self._single_branch = sum(1 for s in steps if s.kind is StepKind.BRANCH) <= 1
        self._parser = MarkerParser()
        #: output without colours nor layout: lines written as they are
        self._bare = not self.console.is_terminal and self.console.color_system is None and not self.console.record
        self._rendered_at = 0.0
        #: what `_write` was given and did not write yet: written, and flushed, by `flush`
        self._pending: list[str] = []
        #: the path of each parent step, as `_path` names it (plain lines name a step by its path:
        #: a command printing markers makes thousands a second under one parent)
        self._parent_paths: dict[str, str] = {}
        #: the text of the lengths of time of steps that ended (`_duration`)
        self._durations: dict[timedelta, str] = {}
        #: the handler of each class of event (`handle`)
        self._handlers: dict[type[Event], Callable[[Event], None]] = self._make_handlers()

    def __enter__(self) -> ProgressPrinter:
        self.console.print(f"[bold]{escape(self.execution.name)}[/]  [dim]execution {self.execution.id}[/]")
        if self.live_mode:
            from rich.live import Live  # a terminal's alone: plain lines need neither it nor tables

            self._live = Live(self._render(), console=self.console, refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        if self._live is not None:
            self._live.update(self._render(final=True))
            self._live.__exit__(None, None, None)
            self._live = None

    def refresh(self) -> None:
        if self._live is not None:
            self._rendered_at = time.monotonic()
            self._live.update(self._render())

    def handle(self, event: Event) -> None:
        """Show one event: by its class, the handler of this mode (`_handlers`). A command printing
        markers makes ~100,000 events a second: a dictionary, not a `match` trying each class."""
        handler = self._handlers.get(type(event))
        if handler is None:
            handler = self._handlers[type(event)] = self._handler_of(type(event))
        handler(event)

    def show(self, first: Event, more: Callable[[], Event | None]) -> bool:
        """`handle` `first` and each event `more` gives, until it gives None (what is queued, taken
        at once; `flush` writes it), if of this printer's execution: others are passed over. True
        once that execution finished; what follows its end is left to `more`."""
        handlers = self._handlers
        execution_id = self.execution.id
        event: Event | None = first
        while event is not None:
            if event.execution_id == execution_id:
                cls = type(event)
                handler = handlers.get(cls)
                if handler is None:
                    handler = handlers[cls] = self._handler_of(cls)
                handler(event)
                if cls is ExecutionFinished:
                    return True
            event = more()
        return False

    def _make_handlers(self) -> dict[type[Event], Callable[[Event], None]]:
        """The handler of each class of event this mode shows: plain lines print as they go; the
        live tree is redrawn after each event (log lines aside: at most every LINES_RENDER_INTERVAL)."""
        handlers: dict[type, Callable[..., None]]
        if not self.live_mode:
            handlers = {StepAdded: self._step_started_plain, StepStarted: self._step_started_plain,
                        StepFinished: self._step_finished_plain, LinesLogged: self._lines_plain}
            shared: dict[type, Callable[..., None]] = {}
        else:
            handlers = {LinesLogged: self._lines_live}
            shared = {StepAdded: self._keep_step, StepStarted: self._keep_step,
                      StepFinished: self._step_finished_live}
        shared |= {StepUpdated: self._step_updated, Notice: self._notice,
                   ExecutionFinished: self._execution_finished}
        for cls, handler in shared.items():
            handlers[cls] = handler if not self.live_mode else self._then_refresh(handler)
        return handlers

    def _handler_of(self, cls: type) -> Callable[[Event], None]:
        """The handler of a class `_handlers` does not name: its base class's, else none (the
        live tree is redrawn all the same)."""
        for base in cls.__mro__[1:]:
            if base in self._handlers:
                return self._handlers[base]
        return self._ignore if not self.live_mode else self._then_refresh(self._ignore)

    def _then_refresh(self, handler: Callable[[Event], None]) -> Callable[[Event], None]:
        def handle_and_refresh(event: Event) -> None:
            handler(event)
            self.refresh()

        return handle_and_refresh

    def _ignore(self, event: Event) -> None:
        pass

    def _keep_step(self, event: StepAdded | StepStarted) -> None:
        step = event.step
        self.steps[step.id] = step

    def _step_started_plain(self, event: StepAdded | StepStarted) -> None:
        step = event.step
        self.steps[step.id] = step
        if step.kind is not _BRANCH:
            self._plain(step, "started")

    def _step_updated(self, event: StepUpdated) -> None:
        step = event.step
        if step.id in self.steps or not step.status.is_terminal:  # not one that left the tree
            self.steps[step.id] = step

    def _step_finished_plain(self, event: StepFinished) -> None:
        step = event.step
        self.steps[step.id] = step
        kind = step.kind
        if kind is not _BRANCH or not self._single_branch:
            self._plain(step, None)
        if kind is _MARKER:
            self._marker_finished(step)

    def _step_finished_live(self, event: StepFinished) -> None:
        step = event.step
        self.steps[step.id] = step
        if step.kind is _MARKER:
            self._marker_finished(step)

    def _lines_plain(self, event: LinesLogged) -> None:
        # per block, not per line: a command may print 100,000s of lines a second
        lines = event.lines
        self._keep_tail(event.step_id, lines)
        if self.verbose and not self.console.quiet:
            prefix = "! " if event.stream is Stream.STDERR else "  "
            if self._bare:
                self._write("".join(f"{prefix}{line}\n" for line in lines))
            else:
                for line in lines:
                    self.console.out(prefix + line, highlight=False)

    def _lines_live(self, event: LinesLogged) -> None:
        lines = event.lines
        self.tail.extend((event.step_id, line) for line in self._tail_lines(lines))
        self._keep_tail(event.step_id, lines)
        if time.monotonic() - self._rendered_at >= LINES_RENDER_INTERVAL:
            self.refresh()  # else the tail is redrawn with the next event or by Live's own refresh

    def _notice(self, event: Notice) -> None:
        level = event.level
        if level in ("error", "warning"):
            self._drain()  # after the lines before it
            self.console.print(f"[{'red' if level == 'error' else 'yellow'}]{level}:[/] {escape(event.message)}")

    def _execution_finished(self, event: ExecutionFinished) -> None:
        self.execution = event.execution

    def _keep_tail(self, step_id: str | None, lines: tuple[str, ...]) -> None:
        """Keep the last lines of a step, for the summary should it fail; not those of a step that
        finished without failing or left the tree."""
        key = step_id or ""
        tail = self.failed_tails.get(key)
        if tail is None:
            if step_id:
                step = self.steps.get(key)
                if step is None:
                    return
                status = step.status
                if status is not _RUNNING and status in TERMINAL_STEP:
                    return
            self.failed_tails[key] = lines[-FAILED_TAIL:]
        elif isinstance(tail, deque):
            tail.extend(lines[-FAILED_TAIL:])
        else:
            kept = self.failed_tails[key] = deque(tail, maxlen=FAILED_TAIL)
            kept.extend(lines[-FAILED_TAIL:])

    def _marker_finished(self, step: Step) -> None:
        """Keep the tree and the tails bounded: the finished step joins its parent's last
        FINISHED_SHOWN; the oldest of those leaves, with whatever was below it."""
        step_id, parent_id = step.id, step.parent_id
        if step.status is _FAILED:
            self._failed_marker_count += 1
            self._failed_markers[step_id] = (step, self._path(step))
            if len(self._failed_markers) > FAILED_SHOWN:
                old_id, _old = self._failed_markers.popitem(last=False)
                self.failed_tails.pop(old_id, None)
        else:
            self.failed_tails.pop(step_id, None)
        shown = self._finished.get(parent_id)
        if shown is None:
            shown = self._finished[parent_id] = deque()
        elif step_id in shown:  # finished twice (an update after its end): already counted
            return
        shown.append(step_id)
        if len(shown) > FINISHED_SHOWN:
            self._forget(shown.popleft())
            hidden = self._hidden
            hidden[parent_id] = hidden.get(parent_id, 0) + 1

    def _forget(self, step_id: str) -> None:
        """A finished marker step leaves the tree, and the steps below it (all finished) too."""
        self.steps.pop(step_id, None)
        self._parent_paths.pop(step_id, None)
        if step_id not in self._failed_markers:
            self.failed_tails.pop(step_id, None)
        children = self._finished.pop(step_id, None)
        if children is not None:  # a parent (`_hidden` has no entry but for a parent in `_finished`)
            self._hidden.pop(step_id, None)
            for child in children:
                self._forget(child)

    def _tail_lines(self, lines: tuple[str, ...]) -> list[str]:
        """The last lines of a block that the live tail shows: output, not the markers driving the
        tree. Only the end of the block is parsed for markers."""
        want = self.tail.maxlen or 0
        window = want
        while True:
            last = lines[-window:]
            markers = {i for i, _m in self._parser.parse_lines(last)}
            shown = [line for i, line in enumerate(last) if i not in markers]
            if len(shown) >= want or len(last) == len(lines):
                return shown[-want:]
            window *= 4

    def _plain(self, step: Step, what: str | None) -> None:
        """The line of a step that started or ended (`what`: what it did; its status when None)."""
        if self.console.quiet:
            return
        status = step.status
        mark, style, value, terminal = STATUS_LINE[status]
        if terminal:
            started, ended = step.started_at, step.completed_at
            if started is None or ended is None:
                duration = formatting.duration(step.duration_seconds)
            else:
                # the text of each length of time is kept for the next step that took as long
                # (marker steps: thousands a second, most of them alike)
                took = ended - started
                kept = self._durations.get(took)
                duration = kept if kept is not None else self._duration(took)
            error = step.error_message if status is not _COMPLETED else None
        else:
            duration, error = "", None
        if what is None:
            what = value
        # plain lines name a step by its path: the parent's is kept (`_path`), here the usual case
        prefix = self._parent_paths.get(step.parent_id) if step.kind is not _BRANCH else None  # type: ignore[arg-type]
        path = prefix + step.name if prefix is not None else self._path(step)
        if self._bare:
            # rich takes ~0.2-0.3 ms to lay out a line; a command printing a marker step per 1,000
            # lines makes thousands of them. Without colours (not a terminal) the text is the same.
            if not duration:
                self._pending.append(f"{mark} {path} {what}{f' {error}' if error else ''}\n")
            else:
                self._pending.append(f"{mark} {path} {what} ({duration}){f' {error}' if error else ''}\n")
            return
        parts = [(mark, style), (f" {path} {what}", "")]
        if duration:
            parts.append((f" ({duration})", "dim"))
        if error:
            parts.append((f" {error}", "red"))
        self.console.print(Text.assemble(*parts))

    def _duration(self, took: timedelta) -> str:
        """`formatting.duration` of `took`, kept (DURATIONS_KEPT at most) for the next step that
        took as long."""
        if len(self._durations) >= DURATIONS_KEPT:
            self._durations.clear()
        text = self._durations[took] = formatting.duration(took.total_seconds())
        return text

    def _write(self, text: str) -> None:
        """Write around rich (plain text, no layout). Kept until the caller flushes (`flush`) once
        it has handled the events at hand: one write for a burst of events, not one a line (each
        write of a full buffer lets the store's thread take the interpreter for a while)."""
        self._pending.append(text)

    def _drain(self) -> None:
        """What `_write` kept goes to the console's file (not flushed), going silent as rich does
        when the reader left."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if self.console.quiet:
            return
        try:
            self.console.file.write("".join(pending))
        except BrokenPipeError:
            self.console.on_broken_pipe()

    def flush(self) -> None:
        """What `_write` kept goes out: one system call for a burst of events, not one a line."""
        if not self._pending:
            return
        self._drain()
        try:
            self.console.file.flush()
        except BrokenPipeError:
            self.console.on_broken_pipe()

    def _path(self, step: Step) -> str:
        parent_id = step.parent_id
        if parent_id is None:
            return self._names(step) or step.name
        # the names above a step stay the same all its life: kept per parent (a command printing
        # markers makes thousands of steps a second under one), forgotten with it
        prefix = self._parent_paths.get(parent_id)
        if prefix is None:
            parent = self.steps.get(parent_id)
            if parent is None:
                return self._names(step) or step.name
            above = self._names(parent)
            prefix = self._parent_paths[parent_id] = above + " › " if above else ""
        if step.kind is not _BRANCH or not self._single_branch:
            return prefix + step.name
        return prefix[:-3] or step.name

    def _names(self, step: Step) -> str:
        """The names from the top down to `step`, the only branch left out."""
        names = []
        current: Step | None = step
        while current is not None:
            if current.kind is not _BRANCH or not self._single_branch:
                names.append(current.name)
            current = self.steps.get(current.parent_id) if current.parent_id else None
        return " › ".join(reversed(names))

    def _render(self, final: bool = False) -> Group:
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        counted: set[str | None] = set()
        for depth, step in ordered_tree(self.steps.values()):
            if step.kind is StepKind.BRANCH and self._single_branch:
                continue
            d = max(depth - 1 if self._single_branch else depth, 0)
            hidden = self._hidden.get(step.parent_id)
            if hidden and step.parent_id not in counted:
                # the earlier finished steps of this parent, before the ones shown
                counted.add(step.parent_id)
                table.add_row(Text("  " * d + f"… {hidden:,} earlier step{'s' if hidden != 1 else ''} finished",
                                   style="dim"))
            table.add_row(step_line(d, step))
        parts: list[object] = [table]
        if not final and self.tail:
            tail = Text()
            for _step_id, line in list(self.tail)[-5:]:
                tail.append("  │ " + Text.from_ansi(line).plain[:200] + "\n", style="dim")
            parts.append(tail)
        elapsed = time.monotonic() - self._started
        if not final:
            parts.append(Text(f"  {formatting.duration(elapsed)} elapsed · Ctrl-C cancels", style="dim"))
        return Group(*parts)  # type: ignore[arg-type]

    def summary(self, execution: Execution) -> None:
        mark, style = glyph(execution.status.value)
        duration = formatting.duration(execution.duration_seconds)
        line = f"[{style}]{mark} {execution.status.value}[/] {escape(execution.name)} in {duration}"
        if execution.exit_code not in (None, 0):
            line += f" (exit code {execution.exit_code})"
        self.console.print(line)
        if execution.status is not ExecutionStatus.COMPLETED:
            if execution.error_message:
                self.console.print(f"  [red]{escape(execution.error_message)}[/]")
            failed = [(step, self._path(step)) for step in self.steps.values()
                      if step.status is StepStatus.FAILED and step.kind is not StepKind.MARKER
                      and (step.kind is not StepKind.BRANCH or self._single_branch)]
            failed += self._failed_markers.values()
            for step, path in failed:
                tail = self.failed_tails.get(step.id)
                if tail and not self.verbose:
                    # the path names the branch too: `web › test`, not one `test` per target
                    self.console.print(f"[dim]── last lines of {escape(path)} ──[/]")
                    for text in list(tail)[-10:]:
                        self.console.out("  " + Text.from_ansi(text).plain, highlight=False)
            more = self._failed_marker_count - len(self._failed_markers)
            if more > 0 and not self.verbose:
                self.console.print(f"[dim]… and {more:,} more failed step{'s' if more != 1 else ''} "
                                   f"(stepflow show lists them)[/]")
        self.console.print(f"[dim]stepflow show {execution.id[:8]}  ·  stepflow logs {execution.id[:8]}[/]")

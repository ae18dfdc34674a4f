"""What the CLI prints: the live progress of `run`/`exec`, the tree of `show`, tables of `ls`."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import IO

from rich.cells import cell_len
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from engine.events import (
    Event,
    ExecutionFinished,
    LinesDropped,
    LinesLogged,
    Notice,
    StepAdded,
    StepFinished,
    StepStarted,
    StepUpdated,
)
from engine.markers import MarkerParser
from engine.model import Execution, ExecutionStatus, Step, StepKind, StepStatus, Stream
from stepflow_tui import formatting
from stepflow_tui.display import STATUS_GLYPHS

#: the TUI's glyphs and colours, without its bold
GLYPHS = {status: (glyph, style.removeprefix("bold ")) for status, (glyph, style) in STATUS_GLYPHS.items()}


#: cells of a running step's progress bar
PROGRESS_WIDTH = 12


def reader_gone(stream: IO[str] | None = None) -> None:
    """The reader of our output left (`stepflow run wf.yaml | head`): point the stream's file
    descriptor at /dev/null, so that what is still buffered, and whatever is printed later, goes
    nowhere instead of raising BrokenPipeError again, at exit too (Python's advice on SIGPIPE)."""
    stream = sys.stdout if stream is None else stream
    with contextlib.suppress(OSError, ValueError, AttributeError):
        fileno = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fileno)
        finally:
            os.close(devnull)


class CliConsole(Console):
    """A console that falls silent when its reader leaves. rich's own answer to a broken pipe ends
    the program (SystemExit); the CLI's commands must go on: a run runs to its end and exits with
    its own code."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        reader_gone(self.file)


def glyph(status: str) -> tuple[str, str]:
    return GLYPHS.get(status, ("?", ""))


def plural(count: float, noun: str) -> str:
    """`1 step`, `2 steps`, `1.5 days`."""
    number = str(count) if isinstance(count, int) else f"{count:g}"
    return f"{number} {noun}" + ("" if count == 1 else "s")


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ordered_tree(steps: Iterable[Step]) -> list[tuple[int, Step]]:
    """Steps in tree order (depth-first by index) with their depth."""
    children: dict[str | None, list[Step]] = {}
    for step in steps:
        children.setdefault(step.parent_id, []).append(step)
    for kids in children.values():
        kids.sort(key=lambda s: s.index)
    out: list[tuple[int, Step]] = []
    known = {s.id for s in steps}

    def walk(parent: str | None, depth: int) -> None:
        for kid in children.get(parent, []):
            out.append((depth, kid))
            walk(kid.id, depth + 1)

    walk(None, 0)
    # orphans (parent unknown): show at top level rather than lose them
    for parent, kids in children.items():
        if parent is not None and parent not in known:
            for kid in kids:
                out.append((0, kid))
                walk(kid.id, 1)
    return out


def step_line(depth: int, step: Step) -> Text:
    mark, style = glyph(step.status.value)
    text = Text("  " * depth)
    text.append(f"{mark} ", style=style)
    name = step.name if step.kind is not StepKind.BRANCH else f"[{step.name}]"
    text.append(name, style="bold" if step.kind is StepKind.BRANCH else "")
    if step.status is StepStatus.RUNNING and step.progress is not None:
        fraction = step.progress / 100
        text.append(f"  {formatting.progress_bar(fraction, PROGRESS_WIDTH)} {formatting.percent(fraction)}", style="cyan")
    duration = formatting.duration(step.duration_seconds)
    if duration:
        text.append(f"  {duration}", style="dim")
    if step.error_message and step.status in (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED):
        text.append(f"  {step.error_message}", style="red" if step.status is StepStatus.FAILED else "yellow")
    usage = []
    if step.cpu_percent is not None:
        usage.append(f"cpu {step.cpu_percent:.0f}%")
    if step.rss_bytes:
        usage.append(f"rss {formatting.size(step.rss_bytes)}")
    if usage:  # a step that ended quickly has CPU but perhaps no RSS (see engine/runners/local.py)
        text.append("  " + " ".join(usage), style="dim")
    return text


#: lines kept per step for the summary of a failed one
FAILED_TAIL = 20
#: finished marker steps the live tree shows under each parent (the latest); the others are counted
FINISHED_SHOWN = 3
#: failed marker steps whose last lines the summary shows (the latest)
FAILED_SHOWN = 10
#: seconds between two redraws of the live display for log lines alone
LINES_RENDER_INTERVAL = 0.1


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
        self.failed_tails: dict[str, deque[str]] = {}
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
        #: `_write` wrote what was not flushed yet
        self._unflushed = False

    def __enter__(self) -> ProgressPrinter:
        self.console.print(f"[bold]{escape(self.execution.name)}[/]  [dim]execution {self.execution.id}[/]")
        if self.live_mode:
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
        match event:
            case StepAdded(step=step) | StepStarted(step=step):
                self.steps[step.id] = step
                if not self.live_mode and step.kind is not StepKind.BRANCH:
                    self._plain(step, "started")
            case StepUpdated(step=step):
                if step.id in self.steps or not step.status.is_terminal:  # not one that left the tree
                    self.steps[step.id] = step
            case StepFinished(step=step):
                self.steps[step.id] = step
                if not self.live_mode and (step.kind is not StepKind.BRANCH or not self._single_branch):
                    self._plain(step, step.status.value)
                if step.kind is StepKind.MARKER:
                    self._marker_finished(step)
            case LinesLogged(lines=lines):
                # per block, not per line: a command may print 100,000s of lines a second
                if self.live_mode:
                    self.tail.extend((event.step_id, line) for line in self._tail_lines(lines))
                tail = self._tail_of(event.step_id)
                if tail is not None:
                    tail.extend(lines[-FAILED_TAIL:])
                if self.verbose and not self.live_mode and not self.console.quiet:
                    prefix = "! " if event.stream is Stream.STDERR else "  "
                    if self._bare:
                        self._write("".join(f"{prefix}{line}\n" for line in lines))
                    else:
                        for line in lines:
                            self.console.out(prefix + line, highlight=False)
                if self.live_mode and time.monotonic() - self._rendered_at < LINES_RENDER_INTERVAL:
                    return  # the tail is redrawn with the next event or by Live's own refresh
            case LinesDropped():
                pass
            case Notice(level=level, message=message) if level in ("error", "warning"):
                self.console.print(f"[{'red' if level == 'error' else 'yellow'}]{level}:[/] {escape(message)}")
            case ExecutionFinished(execution=execution):
                self.execution = execution
        self.refresh()

    def _tail_of(self, step_id: str | None) -> deque[str] | None:
        """The kept last lines of a step, made at its first line; None for a step that finished
        without failing or left the tree (the marker line that closes a step comes after its end)."""
        key = step_id or ""
        tail = self.failed_tails.get(key)
        if tail is None:
            step = self.steps.get(key) if step_id else None
            if step_id and (step is None or step.status.is_terminal):
                return None
            tail = self.failed_tails[key] = deque(maxlen=FAILED_TAIL)
        return tail

    def _marker_finished(self, step: Step) -> None:
        """Keep the tree and the tails bounded: the finished step joins its parent's last
        FINISHED_SHOWN; the oldest of those leaves, with whatever was below it."""
        if step.status is StepStatus.FAILED:
            self._failed_marker_count += 1
            self._failed_markers[step.id] = (step, self._path(step))
            if len(self._failed_markers) > FAILED_SHOWN:
                old_id, _old = self._failed_markers.popitem(last=False)
                self.failed_tails.pop(old_id, None)
        else:
            self.failed_tails.pop(step.id, None)
        shown = self._finished.setdefault(step.parent_id, deque())
        if step.id in shown:  # finished twice (an update after its end): already counted
            return
        shown.append(step.id)
        if len(shown) > FINISHED_SHOWN:
            self._forget(shown.popleft())
            self._hidden[step.parent_id] = self._hidden.get(step.parent_id, 0) + 1

    def _forget(self, step_id: str) -> None:
        """A finished marker step leaves the tree, and the steps below it (all finished) too."""
        self.steps.pop(step_id, None)
        self._hidden.pop(step_id, None)
        if step_id not in self._failed_markers:
            self.failed_tails.pop(step_id, None)
        for child in self._finished.pop(step_id, ()):
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

    def _plain(self, step: Step, what: str) -> None:
        if self.console.quiet:
            return
        mark, style = glyph(step.status.value)
        parts = [(mark, style), (f" {self._path(step)} {what}", "")]
        duration = formatting.duration(step.duration_seconds) if step.status.is_terminal else ""
        if duration:
            parts.append((f" ({duration})", "dim"))
        if step.error_message and step.status.is_terminal and step.status is not StepStatus.COMPLETED:
            parts.append((f" {step.error_message}", "red"))
        if self._bare:
            # rich takes ~0.2-0.3 ms to lay out a line; a command printing a marker step per 1,000
            # lines makes thousands of them. Without colours (not a terminal) the text is the same.
            self._write("".join(part for part, _style in parts) + "\n")
        else:
            self.console.print(Text.assemble(*parts))

    def _write(self, text: str) -> None:
        """Write around rich (plain text, no layout), going silent as rich does when the reader left.
        Not flushed: the caller flushes (`flush`) once it has handled the events at hand."""
        if self.console.quiet:
            return
        try:
            self.console.file.write(text)
        except BrokenPipeError:
            self.console.on_broken_pipe()
        self._unflushed = True

    def flush(self) -> None:
        """What `_write` wrote goes out: one system call for a burst of events, not one a line."""
        if not self._unflushed:
            return
        self._unflushed = False
        try:
            self.console.file.flush()
        except BrokenPipeError:
            self.console.on_broken_pipe()

    def _path(self, step: Step) -> str:
        names = []
        current: Step | None = step
        while current is not None:
            if current.kind is not StepKind.BRANCH or not self._single_branch:
                names.append(current.name)
            current = self.steps.get(current.parent_id) if current.parent_id else None
        return " › ".join(reversed(names)) or step.name

    def _render(self, final: bool = False) -> Group:
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


def render_show(console: Console, execution: Execution, steps: list[Step], artifacts: list) -> None:
    mark, style = glyph(execution.status.value)
    console.print(f"[bold]{escape(execution.name)}[/]  [{style}]{mark} {execution.status.value}[/]")
    rows = [
        ("id", execution.id),
        ("kind", execution.kind.value),
        ("command", execution.command),
        ("directory", execution.working_directory),
        ("targets", ", ".join(execution.targets)),
        ("user", execution.user),
        ("created", fmt_time(execution.created_at)),
        ("started", fmt_time(execution.started_at)),
        ("finished", fmt_time(execution.completed_at)),
        ("duration", formatting.duration(execution.duration_seconds)),
        ("steps", f"{execution.completed_steps}/{execution.total_steps} completed"),
    ]
    if execution.exit_code is not None:
        rows.append(("exit code", str(execution.exit_code)))
    if execution.abort_reason:
        rows.append(("reason", execution.abort_reason.value))
    if execution.error_message:
        rows.append(("error", execution.error_message))
    if execution.rerun_of:
        rows.append(("rerun of", execution.rerun_of))
    grid = Table.grid(padding=(0, 2))
    for key, value in rows:
        if value:
            grid.add_row(Text(key, style="dim"), Text(value))
    console.print(grid)
    console.print()
    for depth, step in ordered_tree(steps):
        console.print(step_line(depth, step))
    if artifacts:
        console.print()
        table = Table("artifact", "type", "size", "step", box=None, header_style="dim")
        names = {s.id: s.name for s in steps}
        for a in artifacts:
            table.add_row(a.name, a.artifact_type.value, formatting.size(a.file_size), names.get(a.step_id or "", ""))
        console.print(table)


#: the fewest characters of a name `ls` shows on a narrow terminal before the line overflows instead
MIN_NAME_WIDTH = 8
_ONE_LINE = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


def render_list(console: Console, executions: list[Execution], places: Mapping[str, int] | None = None) -> None:
    """The `ls` table. Piped, nothing is cut: whole ids and names, for scripts and `grep`. On a
    terminal, ids are their first 8 characters (a unique prefix every command takes) and only the
    name gives way to the terminal's width: a cut id or status is no use. `places`: queued
    executions' places in the queue (shown `queued #3`)."""
    places = places or {}
    whole = not console.is_terminal
    headers = ("", "id", "name", "status", "steps", "started", "duration")
    rows: list[tuple[tuple[str, str], ...]] = []
    for ex in executions:
        mark, style = glyph(ex.status.value)
        rows.append((
            (mark, style),
            (ex.id if whole else ex.id[:8], ""),
            (ex.name.translate(_ONE_LINE), ""),
            (f"queued #{places[ex.id]}" if ex.id in places else ex.status.value, style),
            (f"{ex.completed_steps}/{ex.total_steps}" if ex.total_steps else "", ""),
            (fmt_time(ex.started_at or ex.created_at), ""),
            (formatting.duration(ex.duration_seconds), ""),
        ))
    widths = [max(cell_len(header), *(cell_len(row[i][0]) for row in rows)) for i, header in enumerate(headers)]
    if not whole:
        others = sum(widths) - widths[2] + len(headers) - 1
        widths[2] = max(min(widths[2], console.width - others), min(widths[2], MIN_NAME_WIDTH))
    last = len(headers) - 1
    lines = [Text(" ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), style="dim")]
    for row in rows:
        line = Text()
        for i, ((value, style), width) in enumerate(zip(row, widths, strict=True)):
            cell = Text(value, style=style)
            cell.truncate(width, overflow="ellipsis", pad=i != last)
            line.append_text(cell)
            if i != last:
                line.append(" ")
        line.rstrip()
        lines.append(line)
    for line in lines:
        console.print(line, soft_wrap=True)

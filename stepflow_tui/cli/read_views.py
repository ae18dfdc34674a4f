"""What the read commands print (the `ls` table, the tree of `show`) and the pieces the live
progress of `run`/`exec` (stepflow_tui.cli.output) shares with them. Imports rich's console and
text but none of the engine's events or marker parsing: `stepflow ls` starts without them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import IO

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from engine.model import Execution, Step, StepKind, StepStatus
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


def render_show(console: Console, execution: Execution, steps: list[Step], artifacts: list) -> None:
    from rich.table import Table  # `show` alone lays out tables: `ls` starts without them

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

"""The execution tree: branches → workflow steps → marker steps, with status, duration, progress,
errors and resource usage. Selecting a node filters the log pane to that node's subtree."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from engine.model import COMPLETED_IN, Step, StepKind, StepStatus
from stepflow_tui import formatting
from stepflow_tui.display import duration_between, progress_text, status_glyph

ALL = "__all__"


def step_label(step: Step, now) -> Text:
    glyph, style = status_glyph(step.status.value)
    text = Text()
    text.append(glyph, style=style)
    text.append(" ")
    text.append(step.name, style="bold" if step.kind is StepKind.BRANCH else "")
    if step.kind is StepKind.BRANCH:
        text.append(" (target)", style="dim")
    duration = duration_between(step.started_at, step.completed_at, now)
    if duration is not None:
        text.append(f" {formatting.duration(duration)}", style="dim")
    if step.status is StepStatus.RUNNING and step.progress is not None:
        text.append(" ")
        text.append_text(progress_text(step.progress, 6))
    if step.cpu_percent is not None or step.rss_bytes is not None:
        usage = []
        if step.cpu_percent is not None:
            usage.append(f"{step.cpu_percent:.0f}%cpu")
        if step.rss_bytes is not None:
            usage.append(formatting.size(step.rss_bytes))
        text.append(f" [{' '.join(usage)}]", style="dim")
    if step.status is StepStatus.FAILED and step.error_message:
        text.append(f" — {step.error_message}", style="red")
    elif step.status is StepStatus.SKIPPED and step.metadata.get(COMPLETED_IN):
        text.append(f" — done in {str(step.metadata['completed_in'])[:8]}", style="dim")
    return text


class StepTree(Tree[str]):
    BINDINGS = [
        Binding("enter", "select_cursor", "Filter log", id="tree.select"),
        Binding("space", "toggle_node", "Fold", show=False, id="tree.toggle"),
    ]

    @dataclass
    class Highlighted(Message):
        """The cursor is on a step (None: the root)."""

        step: Step | None

    @dataclass
    class Selected(Message):
        """A node was chosen: the log pane shows `step_ids` (None: the whole execution)."""

        step: Step | None
        step_ids: list[str] | None

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("All output", data=ALL, id=id, classes=classes)
        self.show_root = True
        self.auto_expand = False
        self.guide_depth = 2
        self.steps: dict[str, Step] = {}
        self._step_nodes: dict[str, TreeNode[str]] = {}
        self._child_ids: dict[str | None, list[str]] = {}

    def on_mount(self) -> None:
        self.root.expand()

    def set_steps(self, steps: Iterable[Step]) -> None:
        self.clear()
        self.root.expand()
        self.steps.clear()
        self._step_nodes.clear()
        self._child_ids.clear()
        for step in sorted(steps, key=lambda s: s.index):
            self.update_step(step)

    def update_step(self, step: Step) -> None:
        self.steps[step.id] = step
        node = self._step_nodes.get(step.id)
        label = step_label(step, self.app.now())  # type: ignore[attr-defined]
        if node is not None:
            node.set_label(label)
            if self.cursor_node is node:
                self.post_message(self.Highlighted(step))
            return
        parent = self._step_nodes.get(step.parent_id) if step.parent_id else None
        parent_node = parent if parent is not None else self.root
        node = parent_node.add(label, data=step.id, expand=True, allow_expand=False)
        if parent is not None:
            parent.allow_expand = True
        self._step_nodes[step.id] = node
        self._child_ids.setdefault(step.parent_id, []).append(step.id)

    def wanted_width(self) -> int:
        """Columns that show every node's whole label (guides and fold icons included), as the Tree
        lays them out: `guide_depth` per level, 2 for a node's fold icon."""
        now = self.app.now()  # type: ignore[attr-defined]
        depth: dict[str, int] = {}

        def depth_of(step: Step) -> int:
            known = depth.get(step.id)
            if known is None:
                parent = self.steps.get(step.parent_id) if step.parent_id else None
                known = depth[step.id] = 1 + (depth_of(parent) if parent is not None else 0)
            return known

        widest = cell_len(str(self.root.label)) + 2
        for step in self.steps.values():
            icon = 2 if self._child_ids.get(step.id) else 0
            widest = max(widest, depth_of(step) * self.guide_depth + icon
                         + step_label(step, now).cell_len)
        return widest

    def subtree_ids(self, step_id: str) -> list[str]:
        out = [step_id]
        i = 0
        while i < len(out):
            out.extend(self._child_ids.get(out[i], ()))
            i += 1
        return out

    def tick(self) -> None:
        """Running steps' durations move: relabel them."""
        now = self.app.now()  # type: ignore[attr-defined]
        for step in self.steps.values():
            if step.status is StepStatus.RUNNING:
                self._step_nodes[step.id].set_label(step_label(step, now))

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        event.stop()
        self.post_message(self.Highlighted(self.steps.get(event.node.data or "")))

    @on(Tree.NodeSelected)
    def _selected(self, event: Tree.NodeSelected[str]) -> None:
        event.stop()
        data = event.node.data
        if data is None or data == ALL:
            self.post_message(self.Selected(None, None))
        else:
            self.post_message(self.Selected(self.steps.get(data), self.subtree_ids(data)))

    @property
    def selected_step(self) -> Step | None:
        node = self.cursor_node
        if node is None or node.data in (None, ALL):
            return None
        return self.steps.get(node.data)


def step_detail(step: Step, now) -> Text:
    """Everything about one step, for the line under the tree (the tree itself may be narrow)."""
    glyph, style = status_glyph(step.status.value)
    text = Text()
    text.append(f"{glyph} {step.name}", style=style)
    text.append(f"  {step.status.value}")
    duration = duration_between(step.started_at, step.completed_at, now)
    if duration is not None:
        text.append(f"  {formatting.duration(duration)}")
    if step.progress is not None and not step.status.is_terminal:
        text.append(f"  {formatting.percent(step.progress / 100)}")
    if step.exit_code is not None:
        text.append(f"  exit {step.exit_code}")
    if step.cpu_percent is not None:
        text.append(f"  cpu {step.cpu_percent:.0f}%")
    if step.rss_bytes is not None:
        text.append(f"  rss {formatting.size(step.rss_bytes)}")
    if step.error_message:
        text.append(f"\n{step.error_message}", style="red")
    elif step.description:
        text.append(f"\n{step.description}", style="dim")
    return text

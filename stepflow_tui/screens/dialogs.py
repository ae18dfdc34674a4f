"""Small typed modal dialogs: confirm, ask for a line of text, show every key binding."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

if TYPE_CHECKING:
    from stepflow_tui.screens.keys import KeyGroup


class ConfirmDialog(ModalScreen[bool]):
    """Yes/no. `y` or enter on the confirm button says yes; `n` or escape says no."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, title: str, message: str, *, confirm: str = "Yes", danger: bool = True) -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.message = message
        self.confirm = confirm
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.message, classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.confirm} (y)", id="yes", variant="error" if self.danger else "primary")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TextPrompt(ModalScreen[str | None]):
    """One line of text (a path to save to...). Enter accepts, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title: str, value: str = "", *, placeholder: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.value = value
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static("enter: accept · esc: cancel", classes="dialog-hint")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        self.dismiss(value or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every binding, grouped by where it applies, with the id to remap it (see `screens.keys`)."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, groups: list[KeyGroup], keys_path: str) -> None:
        super().__init__(classes="dialog-screen")
        self.groups = groups
        self.keys_path = keys_path

    @property
    def rows(self) -> list[tuple[str, str, str, str]]:
        """(keys, description, where, id) of every row."""
        return [(r.keys, r.description, g.title, r.binding_id) for g in self.groups for r in g.rows]

    def compose(self) -> ComposeResult:
        rows = [r for g in self.groups for r in g.rows]
        key_width = min(max((len(r.keys) for r in rows), default=4), 16)
        id_width = max((len(r.binding_id) for r in rows), default=2)
        parts: list[RenderableType] = []
        for group in self.groups:
            title = Text(group.title, style="bold underline")
            if group.here:
                title.append("  (here)", style="dim")
            table = Table(box=None, expand=True, show_edge=False, pad_edge=False, show_header=False)
            table.add_column(style="bold", no_wrap=True, width=key_width)
            table.add_column(ratio=1)
            table.add_column(style="dim", no_wrap=True, width=id_width)
            for row in group.rows:
                table.add_row(row.keys, row.description, row.binding_id or "–")
            parts += [title, table, Text("")]
        with Vertical(classes="dialog help-dialog"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(Group(*parts[:-1]))
            yield Static(Text(f"Remap with the ids on the right: {self.keys_path}, [keys] id = \"key\". "
                              "↑↓ pgup pgdn scroll · esc closes.", style="dim"), classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#help-scroll", VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)

"""Every key binding of the app for `?`: grouped by where it applies, with the keys the user's
keymap gives them (`stepflow_tui.keymap`) and the id to remap each one."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import App
from textual.dom import DOMNode

from stepflow_tui.screens.dialogs import ConfirmDialog, HelpScreen, TextPrompt
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.screens.executions import ExecutionsScreen
from stepflow_tui.screens.launch import LaunchDialog
from stepflow_tui.widgets.artifact_pane import ArtifactTable
from stepflow_tui.widgets.execution_list import ExecutionList
from stepflow_tui.widgets.log_view import LogView
from stepflow_tui.widgets.step_tree import StepTree

#: (title, the classes whose bindings apply there); "Everywhere" is the app's own
PLACES: list[tuple[str, tuple[type[DOMNode], ...]]] = [
    ("Executions list", (ExecutionsScreen, ExecutionList)),
    ("Execution view", (ExecutionScreen,)),
    ("Step tree (execution view)", (StepTree,)),
    ("Log pane (execution view)", (LogView,)),
    ("Artifacts (execution view)", (ArtifactTable,)),
    ("Launch dialog", (LaunchDialog,)),
    ("Confirmations and prompts", (ConfirmDialog, TextPrompt)),
    ("This help", (HelpScreen,)),
]

#: Textual's own keys: not in the keymap file (no id), listed so that `?` shows every key
BUILT_IN = [
    ("ctrl+p", "Command palette: every action by name", ""),
    ("ctrl+q", "Quit (as q: asks first while this engine runs executions)", ""),
    ("esc", "Restore a zoomed pane (z)", ""),
    ("tab shift+tab", "Next / previous field or pane", ""),
    ("↑ ↓ pgup pgdn", "Move in lists, trees, tables and dialogs", ""),
]


@dataclass(frozen=True, slots=True)
class KeyRow:
    keys: str
    description: str
    #: the id to remap it with ("" for Textual's own keys)
    binding_id: str


@dataclass(frozen=True, slots=True)
class KeyGroup:
    title: str
    rows: list[KeyRow]
    #: applies where `?` was pressed
    here: bool = False


def binding_groups(app: App, here: DOMNode | None = None) -> list[KeyGroup]:
    """Every binding with an id, by where it applies; the keys are the ones in effect (remaps
    included). `here`: the screen `?` was pressed on, whose groups are marked."""
    keymap = dict(getattr(app, "_keymap", {}))
    present: set[type] = set()
    if here is not None:
        present = {type(here), *(type(node) for node in here.walk_children())}
    groups = [KeyGroup("Everywhere", _rows(app, (type(app),), keymap), here=True)]
    for title, classes in PLACES:
        rows = _rows(app, classes, keymap)
        if rows:
            groups.append(KeyGroup(title, rows, here=any(issubclass(p, classes) for p in present)))
    groups.append(KeyGroup("Built in", [KeyRow(*row) for row in BUILT_IN], here=True))
    return groups


def _rows(app: App, classes: tuple[type[DOMNode], ...], keymap: dict[str, str]) -> list[KeyRow]:
    # in the order the classes declare them (a remap moves a binding to the end of the map)
    keys: dict[str, list[str]] = {}
    described: dict[str, str] = {}
    for cls in classes:
        for bound in cls._merge_bindings().key_to_bindings.values():
            for binding in bound:
                if binding.id:
                    keys.setdefault(binding.id, [])
                    described.setdefault(binding.id, binding.description or binding.action)
        bindings = cls._merge_bindings()
        if keymap:
            bindings.apply_keymap(keymap)
        for bound in bindings.key_to_bindings.values():
            for binding in bound:
                if binding.id:
                    keys[binding.id].append(app.get_key_display(binding))
    return [KeyRow(" ".join(dict.fromkeys(k)), described[i], i) for i, k in keys.items() if k]

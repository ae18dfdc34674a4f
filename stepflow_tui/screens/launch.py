"""The launch dialog: pick a workflow file or type a command, and where it runs.

Workflow files come from the configured directories (sample_workflows/, the current directory) and
the recently launched ones; the list stays fresh as files appear or change (watchfiles). Typing
filters it (words of the path, in any order), and a path typed there (`./ci/nightly.yaml`,
`~/flows/x.yml`) runs that file. The target
is the default (local for a command, the workflow's own `runs_on`), `local`, or a target of the
user's targets file (`engine.targets_file`), read off the event loop when the dialog opens.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Input, Label, OptionList, Select, Static
from textual.widgets.option_list import Option

from engine.targets_file import load_user_targets
from engine.workflow.load import LOCAL, WorkflowError

RECENT_MAX = 10
WORKFLOW_SUFFIXES = (".yml", ".yaml")


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    #: a workflow file to run, or None
    workflow: Path | None = None
    #: a shell command to run, or None
    command: str | None = None
    #: where it runs; None: the default (local for a command, the workflow's own runs_on)
    target: str | None = None


#: the target picker's value for "no choice": local for a command, the workflow's runs_on
DEFAULT_TARGET = ""


def target_options(names: list[str]) -> list[tuple[Text, str]]:
    """The picker's choices: the default, then local, then the targets file's names."""
    default = Text("default")
    default.append(" (local · runs_on)", style="dim")
    options = [(default, DEFAULT_TARGET), (Text(LOCAL), LOCAL)]
    return options + [(Text(name), name) for name in names if name != LOCAL]


def recent_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stepflow" / "recent-workflows.json"


def read_recent(path: Path | None = None) -> list[Path]:
    try:
        data = json.loads((path or recent_path()).read_text())
    except (OSError, ValueError):
        return []
    return [Path(p) for p in data if isinstance(p, str)][:RECENT_MAX]


def remember_recent(workflow: Path, path: Path | None = None) -> None:
    path = path or recent_path()
    items = [str(workflow.resolve())] + [str(p) for p in read_recent(path) if str(p) != str(workflow.resolve())]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(items[:RECENT_MAX]))
    except OSError:
        pass  # remembering is a convenience


class Found(NamedTuple):
    """A workflow file offered: its path, where it came from, and the path as shown (worked out with
    the file system's help once, off the event loop, not at every keystroke)."""

    path: Path
    source: str
    shown: str


def find_workflows(dirs: list[Path], recent: list[Path]) -> list[Found]:
    """The files offered, recent first, each file once (file system calls: run it in a thread)."""
    seen: set[Path] = set()
    out: list[Found] = []
    for path in recent:
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            out.append(Found(path, "recent", display_path(path)))
    for directory in dirs:
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for path in entries:
            if path.suffix in WORKFLOW_SUFFIXES and path.is_file() and path.resolve() not in seen:
                seen.add(path.resolve())
                out.append(Found(path, str(directory), display_path(path)))
    return out


def typed_file(text: str) -> Found | None:
    """The file `text` names (relative to the current directory, or with ~), if it is one (file
    system calls: run it in a thread)."""
    typed = Path(text).expanduser()
    try:
        return Found(typed, "typed path", display_path(typed)) if typed.is_file() else None
    except OSError:
        return None  # a name too long, a folder not readable: a filter then


def filter_workflows(found: list[Found], text: str, typed: Found | None = None) -> list[Found]:
    """The file `text` names when there is one (`typed`), else the files whose shown path holds
    every word of `text` (any case, any order). No file system calls: it runs at every keystroke."""
    if not text:
        return found
    if typed is not None:
        return [typed]
    words = text.lower().split()
    return [f for f in found if all(w in f.shown.lower() for w in words)]


def display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class LaunchDialog(ModalScreen[LaunchRequest | None]):
    #: the target picker comes first on screen, the workflow list first in the user's hands
    AUTO_FOCUS = "#workflow-list"

    BINDINGS = [
        Binding("escape", "cancel", "Close", id="launch.cancel"),
        Binding("ctrl+t", "pick_target", "Target", id="launch.target"),
        # tab moves on at once, in typing order: as a plain binding it would act only once the key
        # has gone through the focused widget and back up to the app, after the keys typed behind it
        Binding("tab", "app.focus_next", "Next field", show=False, priority=True, id="launch.next-field"),
        Binding("shift+tab", "app.focus_previous", "Previous field", show=False, priority=True,
                id="launch.previous-field"),
        # from the filter box, the arrows move in the list it filters
        Binding("down", "move_choice(1)", "Next file", show=False, id="launch.next"),
        Binding("up", "move_choice(-1)", "Previous file", show=False, id="launch.previous"),
    ]

    def __init__(
        self,
        workflow_dirs: list[Path],
        *,
        watch: bool = True,
        recent: list[Path] | None = None,
        targets_path: Path | None = None,
    ) -> None:
        """`targets_path`: the targets file of the engine's machine; None when the engine is
        elsewhere (`--connect`): its targets are not known here, so only local is offered."""
        super().__init__(classes="dialog-screen")
        self.workflow_dirs = workflow_dirs
        self.watch_files = watch  # not `self.watch`: that is DOMNode.watch
        self.recent = read_recent() if recent is None else recent
        self.targets_path = targets_path
        #: the files offered (path, where from), and the ones the filter leaves, as listed
        self.found: list[Found] = []
        #: the filter's text whose typed-path check has come back, and the file it names (or None)
        self._typed: tuple[str, Found | None] = ("", None)
        self.workflows: list[Path] = []
        #: the targets the picker offers besides the default
        self.offered: list[str] = [LOCAL]
        #: where ctrl+t came from: focus goes back there once a target is picked
        self._before_target: Widget | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog launch-dialog"):
            with Horizontal(classes="launch-title-row"):
                yield Label("Launch", classes="dialog-title")
                yield Label("on" if self.targets_path is not None else "on (the server's)", id="target-label")
                yield Select(target_options([]), value=DEFAULT_TARGET, allow_blank=False, compact=True,
                             id="target-select")
            yield Label("Workflow file:")
            yield Input(placeholder="type to filter, or a path to a workflow file", compact=True,
                        select_on_focus=False, id="workflow-filter")
            yield OptionList(id="workflow-list")
            yield Label("Or a command:")
            yield Input(placeholder="e.g. ./build.sh --verbose", id="command-input")
            yield Static("type: filter · enter: run · tab: next · ctrl+t: target · esc: close", classes="dialog-hint")

    def on_mount(self) -> None:
        self._scan()
        if self.targets_path is not None:
            self._read_targets(self.targets_path)
        if self.watch_files:
            self._watch()

    @work(thread=True, group="launch-targets", exclusive=True)
    def _read_targets(self, path: Path) -> None:
        try:
            names = sorted(load_user_targets(path))
        except Exception as exc:  # WorkflowError names the file, line and column; anything else too
            message = str(exc) if isinstance(exc, WorkflowError) else f"{path}: {exc}"
            self.app.call_from_thread(self.notify, message, title="Targets file not read", severity="warning",
                                      timeout=10)
            return
        self.app.call_from_thread(self._show_targets, names)

    def _show_targets(self, names: list[str]) -> None:
        try:
            select = self.query_one("#target-select", Select)
        except NoMatches:
            return  # closed while the file was read
        chosen = select.value
        self.offered = [LOCAL, *(n for n in names if n != LOCAL)]
        select.set_options(target_options(names))
        select.value = chosen if chosen in (DEFAULT_TARGET, LOCAL, *names) else DEFAULT_TARGET

    @property
    def target(self) -> str | None:
        value = self.query_one("#target-select", Select).value
        return value if isinstance(value, str) and value != DEFAULT_TARGET else None

    def action_pick_target(self) -> None:
        select = self.query_one("#target-select", Select)
        if self.focused is not select:
            self._before_target = self.focused
        select.focus()
        select.expanded = True

    @on(Select.Changed, "#target-select")
    def _target_picked(self) -> None:
        back, self._before_target = self._before_target, None
        if back is not None and back.is_attached:
            # after the Select has taken the focus back from its menu
            self.call_after_refresh(back.focus)

    @work(thread=True, group="launch-scan", exclusive=True)
    def _scan(self) -> None:
        found = find_workflows(self.workflow_dirs, self.recent)
        self.app.call_from_thread(self._show, found)

    def _show(self, found: list[Found]) -> None:
        self.found = found
        self._list()

    def _list(self) -> None:
        """The files the filter leaves (or the file its text names), in the list."""
        try:
            options = self.query_one("#workflow-list", OptionList)
            text = self.query_one("#workflow-filter", Input).value.strip()
        except NoMatches:
            return  # closed while the folders were read
        previous = options.highlighted
        checked, typed = self._typed
        shown = filter_workflows(self.found, text, typed if checked == text else None)
        self.workflows = [f.path for f in shown]
        options.clear_options()
        if not shown:
            message = "no workflow file matches" if self.found or text else "no workflow files found"
            options.add_option(Option(Text(message, style="dim"), disabled=True))
            if not self.found and not text:
                self.query_one("#command-input", Input).focus()
            return
        for found in shown:
            label = Text(found.shown)
            if found.source in ("recent", "typed path"):
                label.append(f"  {found.source}", style="dim")
            options.add_option(Option(label))
        options.highlighted = 0 if text else min(previous or 0, len(shown) - 1)
        if self.focused is None:
            options.focus()

    @on(Input.Changed, "#workflow-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._list()
        if event.value.strip():
            self._check_typed(event.value.strip())

    @work(thread=True, group="launch-typed", exclusive=True)
    def _check_typed(self, text: str) -> None:
        found = typed_file(text)
        self.app.call_from_thread(self._typed_checked, text, found)

    def _typed_checked(self, text: str, found: Found | None) -> None:
        self._typed = (text, found)
        if found is not None:
            self._list()  # shows it alone, if the filter still holds that text

    @on(Input.Submitted, "#workflow-filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        index = self.query_one("#workflow-list", OptionList).highlighted
        text = event.value.strip()
        if index is not None and 0 <= index < len(self.workflows):
            self.dismiss(LaunchRequest(workflow=self.workflows[index], target=self.target))
        elif text and self._typed[0] != text:
            self._submit_typed(text)  # enter came before the typed path's check: check, then act
        elif text:
            self._no_match(text)

    @work(thread=True, group="launch-typed", exclusive=True)
    def _submit_typed(self, text: str) -> None:
        found = typed_file(text)
        self.app.call_from_thread(self._typed_submitted, text, found)

    def _typed_submitted(self, text: str, found: Found | None) -> None:
        if found is not None:
            self.dismiss(LaunchRequest(workflow=found.path, target=self.target))
        else:
            self._no_match(text)

    def _no_match(self, text: str) -> None:
        self.notify(f"No workflow file matches {text!r}", severity="warning", timeout=4)

    def on_key(self, event: events.Key) -> None:
        # typing on the list goes to its filter (as in a file picker); a space only once there is
        # text to go on (keys typed quickly still reach the list after the first went to the box)
        box = self.query_one("#workflow-filter", Input)
        if event.is_printable and event.character and (event.character != " " or box.value) \
                and self.focused is self.query_one("#workflow-list", OptionList):
            box.focus()
            box.insert_text_at_cursor(event.character)
            event.stop()
            event.prevent_default()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "move_choice":
            return self.focused is not None and self.focused.id == "workflow-filter"
        return True

    def action_move_choice(self, delta: int) -> None:
        options = self.query_one("#workflow-list", OptionList)
        if self.workflows:
            current = options.highlighted if options.highlighted is not None else -1
            options.highlighted = min(max(current + delta, 0), len(self.workflows) - 1)

    @work(group="launch-watch", exclusive=True)
    async def _watch(self) -> None:
        import watchfiles

        dirs = [str(d) for d in self.workflow_dirs if d.is_dir()]
        if not dirs:
            return
        try:
            async for _changes in watchfiles.awatch(*dirs, recursive=False, debounce=200, step=50):
                self._scan()
        except Exception:  # watching is a convenience: the list still works without it
            return

    @on(OptionList.OptionSelected, "#workflow-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        if 0 <= event.option_index < len(self.workflows):
            self.dismiss(LaunchRequest(workflow=self.workflows[event.option_index], target=self.target))

    @on(Input.Submitted, "#command-input")
    def _command(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.dismiss(LaunchRequest(command=event.value.strip(), target=self.target))

    def action_cancel(self) -> None:
        self.dismiss(None)

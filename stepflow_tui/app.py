"""The Textual app: wires the engine client, the event bridge, the screens and the error handler.

The app talks to the engine only through `engine.client.EngineClient`; it never runs anything
itself, and every engine call happens in a worker so the UI never waits on I/O.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from engine.client import EngineClient
from engine.events import ExecutionDeleted, ExecutionFinished, ExecutionStarted
from engine.model import Artifact, Execution, ExecutionFilter, ExecutionKind, ExecutionStatus
from engine.ownership import this_engine
from engine.submission import SubmitRequest
from engine.targets_file import user_targets_path
from stepflow_tui.bridge import EngineBridge
from stepflow_tui.display import Clock, utc_clock
from stepflow_tui.keymap import default_keys_path, load_keymap
from stepflow_tui.live import LiveCache
from stepflow_tui.screens.dialogs import ConfirmDialog, HelpScreen, TextPrompt
from stepflow_tui.screens.execution import ExecutionScreen
from stepflow_tui.screens.executions import ExecutionsScreen
from stepflow_tui.screens.keys import binding_groups
from stepflow_tui.screens.launch import LaunchDialog, LaunchRequest, remember_recent
from stepflow_tui.widgets.status_strip import StatusStrip

#: the surface executions submitted here come from
SOURCE = "tui"


class StepflowApp(App[None]):
    CSS_PATH = Path(__file__).with_name("stepflow.tcss")
    TITLE = "stepflow"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS = [
        Binding("q", "quit_app", "Quit", id="app.quit"),
        # in place of Textual's "press ctrl+q to quit" hint: ctrl+c quits as q does, asking first
        # where work would be lost (with text selected, the screen's ctrl+c copies it instead)
        Binding("ctrl+c", "quit_app", "Quit", show=False, id="app.interrupt"),
        Binding("question_mark", "help", "Keys", id="app.help"),
        Binding("n", "launch", "Launch", id="app.launch"),
    ]

    def __init__(
        self,
        client: EngineClient,
        *,
        data_dir_label: str | None = None,
        workflow_dirs: Iterable[Path] = (),
        keys_path: Path | None = None,
        clock: Clock | None = None,
        sample_machine: bool = True,
        watch_workflows: bool = True,
        quit_stops_executions: bool = True,
        engine_is_here: bool = True,
    ) -> None:
        super().__init__()
        self.client = client
        self.data_dir_label = data_dir_label or client.description
        self.workflow_dirs = [Path(d) for d in workflow_dirs]
        self.keys_path = keys_path or default_keys_path()
        self.clock = clock or utc_clock
        self.sample_machine = sample_machine
        self.watch_workflows = watch_workflows
        self.quit_stops_executions = quit_stops_executions
        self.running: set[str] = set()
        #: the running executions quitting would stop: this process's engine runs them
        self.running_here: set[str] = set()
        self._this_engine = this_engine() if quit_stops_executions else None
        #: (title, message) the composition root wants shown at start (an API listener that failed...)
        self.startup_notes: list[tuple[str, str]] = []
        #: where the embedded API listens, for the status strip
        self.api_url: str | None = None
        #: the targets file the launch dialog offers; None when the engine is elsewhere (--connect):
        #: this machine's targets file says nothing of the server's
        self.targets_path: Path | None = user_targets_path() if engine_is_here else None
        self.live = LiveCache()
        self.bridge = EngineBridge(client, self)

    def now(self) -> datetime:
        return self.clock()

    # -- start and events ------------------------------------------------------------------------
    def on_mount(self) -> None:
        self.bridge.open()
        self._events()
        self._apply_keymap()
        self.push_screen(ExecutionsScreen())
        self._count_running()
        self.set_interval(1.0, self._tick)
        for title, message in self.startup_notes:
            self.notify(message, title=title, severity="warning", timeout=10)
        self.call_after_refresh(self._freeze_startup_objects)

    def _freeze_startup_objects(self) -> None:
        """What exists once the first screen is up (modules, the DOM, the CSS, the engine and the
        store) lives as long as the app. Out of the collector's sight (`gc.freeze`), a full
        collection during live follow walks only what came after: tens of ms instead of hundreds,
        which a key press would otherwise wait out."""
        gc.collect()
        gc.freeze()

    def _apply_keymap(self) -> None:
        loaded = load_keymap(self.keys_path)
        if loaded.keys:
            self.set_keymap(loaded.keys)
        for problem in loaded.problems:
            self.notify(problem, title="Key remaps", severity="warning", timeout=8)

    @work(group="engine-events", exit_on_error=False)
    async def _events(self) -> None:
        await self.bridge.run()

    @work(group="count-running", exclusive=True)
    async def _count_running(self) -> None:
        try:
            rows, _total = await self.client.list_executions(
                ExecutionFilter(status=ExecutionStatus.RUNNING, limit=1000))
        except Exception as exc:
            self.report_error(exc)
            return
        self.running.update(ex.id for ex in rows)
        # others (another stepflow on the same data directory) keep running when this one quits
        self.running_here.update(ex.id for ex in rows if self._this_engine and ex.owner == self._this_engine)
        self._show_running()

    @on(EngineBridge.Changed)
    def _engine_changed(self) -> None:
        events = self.bridge.take()
        if not events:
            return
        self.live.apply(events)
        before = len(self.running)
        for ev in events:
            if isinstance(ev, ExecutionStarted):
                self.running.add(ev.execution.id)
                if self._this_engine is not None:
                    # the events of an engine in this process are its own executions'
                    self.running_here.add(ev.execution.id)
            elif isinstance(ev, ExecutionFinished | ExecutionDeleted):
                self.running.discard(ev.execution_id)
                self.running_here.discard(ev.execution_id)
        if len(self.running) != before:
            self._show_running()
        for screen in self.screen_stack:
            apply = getattr(screen, "apply_events", None)
            if apply is not None:
                apply(events)

    @on(EngineBridge.Closed)
    def _engine_closed(self) -> None:
        self.notify("The engine's event stream ended: the view no longer updates.",
                    title="Engine gone", severity="error", timeout=10)

    def _show_running(self) -> None:
        for screen in self.screen_stack:
            for strip in screen.query(StatusStrip):
                strip.running = len(self.running)

    def _tick(self) -> None:
        tick = getattr(self.screen, "tick", None)
        if tick is not None:
            tick()

    # -- errors ----------------------------------------------------------------------------------
    def report_error(self, exc: BaseException) -> None:
        """The one place errors are shown: a notification with a human title and message."""
        title = getattr(exc, "title", None) or type(exc).__name__.replace("Error", " error").strip()
        message = getattr(exc, "message", None) or str(exc) or repr(exc)
        self.log.error(f"{title}: {message}")
        self.notify(str(message), title=str(title), severity="error", timeout=10)

    def engine_call(self, call: Awaitable[Any], *, done: Callable[[Any], object] | None = None) -> None:
        """Await an engine command in a worker; errors become notifications."""
        self._engine_call(call, done)

    @work(group="engine-calls")
    async def _engine_call(self, call: Awaitable[Any], done: Callable[[Any], object] | None) -> None:
        try:
            result = await call
        except Exception as exc:
            self.report_error(exc)
            return
        if done is not None:
            done(result)

    # -- navigation --------------------------------------------------------------------------------
    def open_execution(self, execution: Execution) -> None:
        """Show an execution (on top of the list; replacing another execution view)."""
        if isinstance(self.screen, ExecutionScreen):
            self.switch_screen(ExecutionScreen(execution))
        else:
            self.push_screen(ExecutionScreen(execution))

    # -- app actions ---------------------------------------------------------------------------------
    def action_launch(self) -> None:
        def chosen(request: LaunchRequest | None) -> None:
            if request is None:
                return
            if request.workflow is not None:
                workflow = request.workflow
                targets = [request.target] if request.target else []

                def launched(execution: Execution) -> None:
                    # only a file that ran is remembered: one that did not validate is not "recent"
                    remember_recent(workflow)
                    self._launched(execution)

                self.engine_call(self.client.submit(SubmitRequest(
                    kind=ExecutionKind.WORKFLOW, source=SOURCE, workflow_path=workflow, targets=targets,
                )), done=launched)
            elif request.command:
                self.engine_call(self.client.submit(SubmitRequest(
                    kind=ExecutionKind.COMMAND, source=SOURCE, command=request.command,
                    targets=[request.target or "local"],
                )), done=self._launched)

        self.push_screen(LaunchDialog(self.workflow_dirs, watch=self.watch_workflows, targets_path=self.targets_path),
                         chosen)

    def _launched(self, execution: Execution) -> None:
        self.notify(f"Started {execution.name}", timeout=3)
        self.open_execution(execution)

    async def action_quit(self) -> None:
        # Textual's ctrl+q (and the palette's Quit) ask first too, as q does
        self.action_quit_app()

    def action_quit_app(self) -> None:
        """Quit; first ask when running executions would be stopped (an engine in this process).
        Connected to a server (`--connect`) nothing is lost: its executions go on without us."""
        if not self.running_here:
            self.exit()
            return
        count = len(self.running_here)
        them = "it" if count == 1 else "them"
        what = (f"{count} execution{'s are' if count > 1 else ' is'} running. Quitting stops the engine: "
                f"{them} get{'s' if count == 1 else ''} SIGTERM and {'is' if count == 1 else 'are'} "
                "recorded as cancelled (reason: shutdown).")

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        if not any(isinstance(s, ConfirmDialog) and s.title_text == "Quit stepflow?" for s in self.screen_stack):
            self.push_screen(ConfirmDialog("Quit stepflow?", what, confirm="Quit"), answered)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(binding_groups(self, self.screen), str(self.keys_path)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Launch", "Run a workflow file or a command", self.action_launch)
        yield SystemCommand("Keys", "Show every key binding and its id", self.action_help)
        for name, help_text, action in (
            ("Cancel execution", "Stop the current execution", "cancel_execution"),
            ("Rerun execution", "Run the current execution again", "rerun"),
            ("Rerun from the failed step", "Rerun, skipping the steps that completed", "rerun_failed"),
            ("Delete execution", "Delete the current execution with its logs", "delete_execution"),
        ):
            if hasattr(screen, f"action_{action}") and screen.check_action(action, ()):
                yield SystemCommand(name, help_text, getattr(screen, f"action_{action}"))
        for name, help_text, action in (
            ("Toggle follow", "Follow the end of the log", "toggle_follow"),
            ("Toggle timestamps", "Show each log line's time", "toggle_timestamps"),
            ("Toggle wrap", "Wrap long log lines", "toggle_wrap"),
            ("Toggle marker lines", "Show or hide step marker lines (STEP_PROGRESS:…, ::group::…)", "toggle_markers"),
        ):
            for log_view in screen.query("LogView"):
                yield SystemCommand(name, help_text, getattr(log_view, f"action_{action}"))

    def save_artifact(self, artifact: Artifact) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self._save_artifact(artifact, Path(path).expanduser())

        self.push_screen(TextPrompt(f"Save a copy of {artifact.name} to:", str(Path.cwd() / artifact.file_name)),
                         chosen)

    @work(group="artifact-save")
    async def _save_artifact(self, artifact: Artifact, path: Path) -> None:
        try:
            data = await self.client.read_artifact(artifact.id)
            path = await asyncio.to_thread(_write_copy, path, artifact.file_name, data)
        except Exception as exc:
            self.report_error(exc)
            return
        self.notify(f"Saved {artifact.name} to {path}")

    async def on_unmount(self) -> None:
        self.bridge.close()
        # back to the collector: whatever the app leaves behind (an embedding process, the tests)
        gc.unfreeze()


def _write_copy(path: Path, file_name: str, data: bytes) -> Path:
    if path.is_dir():
        path = path / file_name
    path.write_bytes(data)
    return path


async def run_tui(
    client: EngineClient,
    *,
    data_dir_label: str | None = None,
    workflow_dirs: Iterable[Path] = (),
    keys_path: Path | None = None,
    quit_stops_executions: bool = True,
) -> None:
    """Run the TUI until the user quits. The caller owns the engine (start it before, shut it down after)."""
    app = StepflowApp(client, data_dir_label=data_dir_label, workflow_dirs=workflow_dirs, keys_path=keys_path,
                      quit_stops_executions=quit_stops_executions)
    await app.run_async()


__all__ = ["StepflowApp", "run_tui"]

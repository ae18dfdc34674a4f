"""The commands on one execution (cancel, rerun, rerun from the failed step, delete), shared by the
list and the execution view. The screen says which execution is current; confirmations first."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual.binding import Binding
from textual.screen import Screen

from engine.model import Execution, ExecutionStatus
from stepflow_tui.screens.dialogs import ConfirmDialog

EXECUTION_BINDINGS = [
    Binding("c", "cancel_execution", "Cancel", id="execution.cancel"),
    Binding("r", "rerun", "Rerun", id="execution.rerun"),
    Binding("R", "rerun_failed", "Rerun failed", show=False, id="execution.rerun_failed"),
    Binding("d", "delete_execution", "Delete", id="execution.delete"),
]


class ExecutionActions(Screen):
    """Mixed into screens that have a current execution."""

    def current_execution(self) -> Execution | None:  # pragma: no cover - overridden
        raise NotImplementedError

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in ("cancel_execution", "rerun", "rerun_failed", "delete_execution"):
            return True
        # the footer shows what can be done now: with an execution at hand, what fits its status
        # (the screens call refresh_bindings when the status or the current execution changes)
        ex = self.current_execution()
        if ex is None:
            return False
        if action == "cancel_execution":
            return not ex.status.is_terminal
        if action == "delete_execution":
            return ex.status.is_terminal
        if action == "rerun_failed":
            return ex.status in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED)
        return True

    def action_cancel_execution(self) -> None:
        ex = self.current_execution()
        if ex is None:
            return
        if ex.status.is_terminal:
            self.notify(f"{ex.name} already {ex.status.value}", severity="warning")
            return

        self._confirm_then(
            ConfirmDialog("Cancel execution?",
                          f"Stop “{ex.name}”? Its commands get SIGTERM, then SIGKILL after a grace period; "
                          "it is recorded as cancelled.", confirm="Cancel it"),
            lambda: self.app.client.cancel(ex.id),  # type: ignore[attr-defined]
            f"Cancelling {ex.name}…",
        )

    def action_rerun(self) -> None:
        self._rerun(from_failed=False)

    def action_rerun_failed(self) -> None:
        self._rerun(from_failed=True)

    def _rerun(self, *, from_failed: bool) -> None:
        ex = self.current_execution()
        if ex is None:
            return
        if from_failed and ex.status not in (ExecutionStatus.FAILED, ExecutionStatus.CANCELLED):
            self.notify(f"{ex.name} is {ex.status.value}: nothing failed to rerun from", severity="warning")
            return
        self.app.engine_call(  # type: ignore[attr-defined]
            self.app.client.rerun(ex.id, from_failed=from_failed),  # type: ignore[attr-defined]
            done=self.app.open_execution,  # type: ignore[attr-defined]
        )

    def action_delete_execution(self) -> None:
        ex = self.current_execution()
        if ex is None:
            return
        if not ex.status.is_terminal:
            self.notify(f"{ex.name} is {ex.status.value}: cancel it first", severity="warning")
            return

        self._confirm_then(
            ConfirmDialog("Delete execution?",
                          f"Delete “{ex.name}” with its logs and artifacts? This cannot be undone.",
                          confirm="Delete"),
            lambda: self.app.client.delete(ex.id),  # type: ignore[attr-defined]
            f"Deleted {ex.name}",
        )

    def _confirm_then(self, question: ConfirmDialog, call: Callable[[], Awaitable[object]], done: str) -> None:
        """Ask `question`; on yes, make the engine `call` and say `done` once it has."""

        def answered(yes: bool | None) -> None:
            if yes:
                self.app.engine_call(call(), done=lambda _r: self.notify(done))  # type: ignore[attr-defined]

        self.app.push_screen(question, answered)

"""The marker steps open in ONE running command's output, and what each new marker does to them.

`MarkerTree` is fed the markers of `engine.markers` in output order and answers with actions
(dataclasses below) that the engine applies: open a step, close one, set progress, and so on. It does
no I/O and knows nothing of the engine's steps: it names its steps with local ids (1, 2, 3 …) that
the engine maps to real steps.

Rules (specs/step-markers.md, plus the choices where it is silent):

- The open steps form a stack; the innermost is `current()`, where log lines, progress, metadata,
  artifacts and annotations go. Whatever a marker opens becomes a child of the innermost open step,
  whatever its dialect (a STEP_START inside a TeamCity block is that block's child).
- Closing a step closes the steps opened inside it first, innermost first, the same way (completed,
  or failed with the same error).
- StepFlow: at most one STEP_START step is open. A new STEP_START completes the open one first.
  STEP_COMPLETE closes it only if the names match (an empty name matches any); otherwise it is ignored
  with a warning, except right after the step was closed another way (STEP_ERROR, or the group it
  was in closing): then the late STEP_COMPLETE is expected and silently has nothing left to do.
- STEP_ERROR (and TeamCity's buildProblem) fails the open StepFlow step, or when none is open the
  innermost open step of any dialect, and closes it: it is over, and the UI shows it red at once.
  If that step has stop_on_error, StopExecution follows. With no step open at all, the error becomes
  an error annotation on the command's own step, and the command goes on (no step asked to stop).
- GitHub and Azure groups don't nest: a new group closes the open group of its dialect first.
  Buildkite likewise: each header closes the previous Buildkite group.
- GitLab sections and TeamCity blocks nest; closing one by name closes what was opened inside it.
- A closing marker with nothing to close is ignored with a warning.
- `finish(exit_code)` closes all that is still open: completed when the exit code is 0, failed with
  "exit code N" otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine import markers as m


# -- actions ------------------------------------------------------------------------------------------------------
# not frozen: one is made for each marker, in half the time; nothing changes it
@dataclass(slots=True)
class OpenStep:
    local_id: int
    #: None: a child of the command's own step
    parent_local_id: int | None
    name: str
    params: dict[str, object] = field(default_factory=dict)
    stop_on_error: bool = False
    estimated_duration: float | None = None
    dialect: str = "stepflow"
    #: the step asked to be shown expanded (Buildkite "+++")
    expanded: bool = False


# not frozen: one is made for each marker, in half the time; nothing changes it
@dataclass(slots=True)
class CloseStep:
    local_id: int
    failed: bool = False
    error: str | None = None
    #: the command's exit code when the step is closed because the command ended (`finish`)
    exit_code: int | None = None


@dataclass(frozen=True, slots=True)
class SetProgress:
    #: None: the command's own step
    local_id: int | None
    #: 0..100
    percent: float | None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class SetMeta:
    """Metadata on a step (None: the command's own step, or the execution). The keys
    ``ESTIMATED_DURATION`` and ``DESCRIPTION`` name those fields of the step."""

    local_id: int | None
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class AddArtifact:
    local_id: int | None
    #: as printed: a relative path is relative to the command's working directory
    path: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Annotate:
    local_id: int | None
    #: "error", "warning", "notice" or "debug"
    level: str
    message: str
    file: str | None = None
    line: int | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class AddMask:
    value: str


@dataclass(frozen=True, slots=True)
class StopExecution:
    """A step with stop_on_error failed: stop the command (SIGTERM, grace, SIGKILL), fail the execution."""

    local_id: int
    message: str


@dataclass(frozen=True, slots=True)
class Warn:
    """A marker that was ignored; the message says which and why."""

    message: str


Action = (
    OpenStep | CloseStep | SetProgress | SetMeta | AddArtifact | Annotate | AddMask | StopExecution | Warn
)

#: how each dialect's closing marker reads, for warnings
_CLOSER = {
    "stepflow": "STEP_COMPLETE:{name}",
    "github": "::endgroup::",
    "gitlab": "section_end for '{name}'",
    "teamcity": "blockClosed '{name}'",
    "azure": "##[endgroup]",
    "buildkite": "Buildkite group end",
}
#: dialects whose groups don't nest: a new one closes the open one of the same dialect
_FLAT = frozenset({"stepflow", "github", "azure", "buildkite"})


@dataclass(slots=True)
class _Open:
    local_id: int
    dialect: str
    name: str
    #: what a closing marker names (GitLab section, TeamCity block); None: closed by position
    key: str | None
    stop_on_error: bool


class MarkerTree:
    """The open marker steps of one command.

    >>> tree = MarkerTree()
    >>> tree.feed(m.StepOpened("build"))
    [OpenStep(local_id=1, parent_local_id=None, name='build', params={}, stop_on_error=False, estimated_duration=None, dialect='stepflow', expanded=False)]
    >>> tree.feed(m.StepClosed("build"))
    [CloseStep(local_id=1, failed=False, error=None, exit_code=None)]
    """

    __slots__ = ("_next_id", "_stack", "_closed_early")

    def __init__(self) -> None:
        self._next_id = 1
        self._stack: list[_Open] = []
        #: name of the last StepFlow step closed other than by STEP_COMPLETE, while none is open
        self._closed_early: str | None = None

    def current(self) -> int | None:
        """Local id of the innermost open step (where log lines go); None when none is open."""
        return self._stack[-1].local_id if self._stack else None

    def feed(self, marker: m.Marker) -> list[Action]:
        """What ``marker`` does, as actions to apply in order."""
        kind = type(marker)  # the two usual ones first, without the match's isinstance checks
        if kind is m.StepOpened:
            return self._open(marker)  # type: ignore[arg-type]
        if kind is m.StepClosed:
            return self._close(marker)  # type: ignore[arg-type]
        match marker:
            case m.StepOpened():
                return self._open(marker)
            case m.StepClosed():
                return self._close(marker)
            case m.StepErrored():
                return self._error(marker.message)
            case m.ProgressReported():
                return self._progress(marker)
            case m.MetaSet():
                return [SetMeta(self.current(), marker.key, marker.value)]
            case m.ArtifactDeclared():
                return [AddArtifact(self.current(), marker.path, marker.description)]
            case m.Annotated():
                return [
                    Annotate(
                        self.current(), marker.level, marker.message, marker.file, marker.line, marker.title
                    )
                ]
            case m.MaskAdded():
                return [AddMask(marker.value)]
        return []

    def finish(self, exit_code: int) -> list[Action]:
        """The command ended: close every step still open, innermost first, with its exit code."""
        failed = exit_code != 0
        error = f"exit code {exit_code}" if failed else None
        actions = self._close_from(0, failed, error, exit_code)
        self._closed_early = None
        return actions

    # -- opening and closing -------------------------------------------------------------------------------
    def _open(self, marker: m.StepOpened) -> list[Action]:
        dialect = marker.dialect
        stack = self._stack
        actions: list[Action] = []
        if stack and dialect in _FLAT:
            index = self._find(dialect)
            if index is not None:
                actions = self._close_from(index, False, None)
        if dialect == "stepflow":
            self._closed_early = None
        local_id = self._next_id
        self._next_id = local_id + 1
        params = marker.params
        actions.append(
            OpenStep(
                local_id,
                stack[-1].local_id if stack else None,
                marker.name,
                dict(params) if params else {},
                marker.stop_on_error,
                marker.estimated_duration,
                dialect,
                marker.expanded,
            )
        )
        stack.append(_Open(local_id, dialect, marker.name, marker.key, marker.stop_on_error))
        return actions

    def _close(self, marker: m.StepClosed) -> list[Action]:
        dialect = marker.dialect
        stack = self._stack
        if stack and dialect == "stepflow":
            # the usual close: of the innermost step, a StepFlow step of that name (what the
            # general way below does for it)
            top = stack[-1]
            if top.dialect == "stepflow" and (marker.name is None or marker.name == top.name):
                stack.pop()
                self._closed_early = None
                return [CloseStep(top.local_id, False, None, None)]
        keyed = dialect in ("gitlab", "teamcity") and marker.name is not None
        index = self._find(dialect, marker.name if keyed else None)
        if index is None:
            if dialect == "stepflow" and marker.name is not None and marker.name == self._closed_early:
                self._closed_early = None
                return []
            return [Warn(f"{_closer(marker)} ignored: no such step is open")]
        entry = self._stack[index]
        if dialect == "stepflow" and marker.name is not None and marker.name != entry.name:
            return [Warn(f"{_closer(marker)} ignored: the open step is '{entry.name}'")]
        actions = self._close_from(index, False, None)
        if dialect == "stepflow":
            # closed by its own STEP_COMPLETE: a second one is a mistake worth a warning
            self._closed_early = None
        return actions

    def _error(self, message: str) -> list[Action]:
        index = self._find("stepflow")
        if index is None and self._stack:
            index = len(self._stack) - 1
        if index is None:
            return [Annotate(None, "error", message or "error reported outside any step")]
        entry = self._stack[index]
        error = message or f"step '{entry.name}' reported an error"
        actions = self._close_from(index, True, error)
        if entry.stop_on_error:
            actions.append(StopExecution(entry.local_id, error))
        return actions

    def _progress(self, marker: m.ProgressReported) -> list[Action]:
        percent = marker.percent
        if percent is None and marker.done is not None and marker.total:
            percent = marker.done * 100.0 / marker.total
        if percent is not None:
            percent = max(0.0, min(100.0, percent))
        text = marker.text
        if text is None and marker.done is not None and marker.total is not None:
            text = f"{marker.done}/{marker.total}"
        if percent is None and text is None:
            return []
        return [SetProgress(self.current(), percent, text)]

    def _find(self, dialect: str, key: str | None = None) -> int | None:
        """Stack index of the innermost open step of ``dialect`` (with ``key``, when given)."""
        for index in range(len(self._stack) - 1, -1, -1):
            entry = self._stack[index]
            if entry.dialect == dialect and (key is None or entry.key == key):
                return index
        return None

    def _close_from(
        self, index: int, failed: bool, error: str | None, exit_code: int | None = None
    ) -> list[Action]:
        """Close the step at stack ``index`` and every step opened inside it, innermost first."""
        actions: list[Action] = []
        while len(self._stack) > index:
            entry = self._stack.pop()
            actions.append(CloseStep(entry.local_id, failed, error, exit_code))
            if entry.dialect == "stepflow":
                self._closed_early = entry.name
        return actions


def _closer(marker: m.StepClosed) -> str:
    """How the closing marker reads, for a warning."""
    dialect = marker.dialect
    return _CLOSER.get(dialect, f"{dialect} close").format(name=marker.name or "")

"""The one interface clients (the TUI, the CLI, the API) use to talk to an engine.

`engine.engine.Engine` implements it in-process; `api_compat.monitor.client.RemoteEngine` implements it
over the StepFlow Monitor HTTP/WebSocket API. Commands return at once; nobody awaits a whole run.
Events come through `subscribe()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, Unpack

from engine.events import Event
from engine.model import (
    AbortReason,
    Artifact,
    ArtifactFilter,
    Execution,
    ExecutionFilter,
    LogLine,
    Step,
)
from engine.store.logs import LogSelection
from engine.submission import SubmitRequest


class Subscription(Protocol):
    """An async iterator of events with its own bounded queue. A lagging non-lossless subscriber
    loses coalescable events (it gets a `LinesDropped` in their place), never status events."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def __anext__(self) -> Event: ...

    def close(self) -> None: ...


class EngineClient(Protocol):
    # -- commands (validate, persist the new rows, start, return at once) -------------------
    async def submit(self, request: SubmitRequest) -> Execution:
        """Run a command (shell text: `bash -c`; an argv: directly; its markers become steps) or a
        workflow (a file or its text). Started at once when the engine has room, else queued
        (pending) by priority, then age. A workflow that does not validate raises
        `engine.workflow.load.WorkflowError` before anything is created."""

    async def cancel(self, execution_id: str, reason: AbortReason = AbortReason.USER) -> None:
        """Ask a running execution to stop (SIGTERM, grace, SIGKILL), or end a queued one before it
        starts. Returns at once."""

    async def rerun(self, execution_id: str, *, from_failed: bool = False) -> Execution:
        """A new execution of the same command/workflow. `from_failed`: steps that completed in
        the original are recorded as skipped ("done in <id>") and only the rest run."""

    async def delete(self, execution_id: str) -> None:
        """Delete a finished execution with its logs and artifacts. Raises `Conflict` if it runs."""

    # -- reads (history from the store; live changes come as events) ------------------------
    async def list_executions(self, flt: ExecutionFilter) -> tuple[list[Execution], int]: ...

    async def get_execution(self, execution_id: str) -> Execution | None: ...

    async def get_steps(self, execution_id: str) -> list[Step]: ...

    async def list_artifacts(self, flt: ArtifactFilter) -> tuple[list[Artifact], int]: ...

    async def read_artifact(self, artifact_id: str) -> bytes:
        """The artifact's content (raises NotFound)."""

    async def get_log_lines(
        self,
        execution_id: str,
        **selection: Unpack[LogSelection],
    ) -> list[LogLine]:
        """Lines with after_seq < seq < before_seq (of `step_ids` only, if given), in seq order or
        newest first, skipping the first `offset` of them: a view filtered to a step jumps to its
        n-th line with one read."""

    async def count_log_lines(self, execution_id: str, *, step_ids: Sequence[str] | None = None) -> int: ...

    def subscribe(self, *, maxsize: int = 10_000) -> Subscription: ...

    @property
    def description(self) -> str:
        """Where this engine is, for a status line: a data directory or a URL."""

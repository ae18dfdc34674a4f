"""The WebSocket under the reference shape (`reference_shape`): the documented messages, and what the
reference web UI listens for besides.

- `execution_update` (the reference server's message): the execution as `GET /api/executions` lists
  it, plus `execution_id`, to every client, when an execution is created, starts, finishes, or its
  counters change. The UI reloads its page on each, so an execution's counter changes come at most
  once per `UPDATE_INTERVAL` seconds (the last one always comes); status changes come at once.
- `execution_started` and `execution_completed` carry the execution's own fields too (`id`, `name`,
  `command`, ...): the UI names the execution in its notices by `name` or `id`. The documented
  fields keep their documented values.

Who receives what otherwise, and when, is the documented hub's business (`ws.WsHub`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from api_compat.monitor.wire import execution_dict
from api_compat.monitor.ws import WsHub
from api_compat.monitor.ws_messages import message
from engine.events import (
    Event,
    ExecutionCreated,
    ExecutionDeleted,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionUpdated,
)
from engine.model import Execution

#: seconds between two `execution_update` messages of one execution whose status did not change
UPDATE_INTERVAL = 1.0

_WITH_EXECUTION = frozenset({"execution_started", "execution_completed"})
_EXECUTION_EVENTS = (ExecutionCreated, ExecutionStarted, ExecutionUpdated, ExecutionFinished)


def with_execution(text: str, execution: Execution) -> str:
    """A documented `execution_started`/`execution_completed` message with the execution's fields
    added (the documented ones win); any other message unchanged."""
    payload = json.loads(text)
    if payload.get("type") not in _WITH_EXECUTION:
        return text
    payload["data"] = {**execution_dict(execution), **payload["data"]}
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)


def execution_update(execution: Execution) -> str:
    return message("execution_update", {**execution_dict(execution), "execution_id": execution.id})


class ReferenceWsHub(WsHub):
    """The documented hub, with the reference UI's `execution_update` and fuller execution messages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the execution of the event being dispatched: its messages are completed with it
        self._event_execution: Execution | None = None
        #: loop time of the last `execution_update`, per execution still running
        self._last_update: dict[str, float] = {}
        #: a counter change waiting for its execution's interval to pass
        self._later: dict[str, asyncio.TimerHandle] = {}

    async def stop(self) -> None:
        await super().stop()
        for handle in self._later.values():
            handle.cancel()
        self._later.clear()

    async def dispatch(self, event: Event) -> None:
        execution = event.execution if isinstance(event, _EXECUTION_EVENTS) else None
        self._event_execution = execution
        try:
            await super().dispatch(event)
        finally:
            self._event_execution = None
        if execution is not None:
            self._update(execution, status_changed=not isinstance(event, ExecutionUpdated))
        elif isinstance(event, ExecutionDeleted):
            self._forget(event.id)

    def broadcast(self, text: str) -> None:
        if self._event_execution is not None:
            text = with_execution(text, self._event_execution)
        super().broadcast(text)

    def _update(self, execution: Execution, *, status_changed: bool) -> None:
        loop = asyncio.get_running_loop()
        waiting = self._later.pop(execution.id, None)
        if waiting is not None:
            waiting.cancel()
        last = self._last_update.get(execution.id)
        if status_changed or last is None or loop.time() - last >= UPDATE_INTERVAL:
            self._send_update(execution)
        else:
            self._later[execution.id] = loop.call_at(last + UPDATE_INTERVAL, self._send_update, execution)

    def _send_update(self, execution: Execution) -> None:
        self._later.pop(execution.id, None)
        super().broadcast(execution_update(execution))
        if execution.status.is_terminal:
            self._last_update.pop(execution.id, None)
        else:
            self._last_update[execution.id] = asyncio.get_running_loop().time()

    def _forget(self, execution_id: str) -> None:
        self._last_update.pop(execution_id, None)
        waiting = self._later.pop(execution_id, None)
        if waiting is not None:
            waiting.cancel()

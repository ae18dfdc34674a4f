"""From the engine's event subscription to Textual messages, coalesced.

Events are buffered; the app is told with one `EngineBridge.Changed` message, which replaces any
such message still waiting in the queue. However many events arrive between two frames, the app
drains them all in one go and repaints once.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message
from textual.message_pump import MessagePump

from engine.client import EngineClient, Subscription
from engine.events import Event


class EngineBridge:
    @dataclass
    class Changed(Message):
        """New events are waiting in the bridge: call `EngineBridge.take()`."""

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, EngineBridge.Changed)

    @dataclass
    class Closed(Message):
        """The engine's event stream ended (the engine shut down or the connection was lost)."""

    def __init__(self, client: EngineClient, target: MessagePump, *, maxsize: int = 10_000) -> None:
        self._client = client
        self._target = target
        self._maxsize = maxsize
        self._pending: list[Event] = []
        self._subscription: Subscription | None = None

    def open(self) -> None:
        """Subscribe now, so that no event is missed between the first reads and the loop."""
        if self._subscription is None:
            self._subscription = self._client.subscribe(maxsize=self._maxsize)

    async def run(self) -> None:
        """Read events until the subscription ends (run in a worker)."""
        self.open()
        assert self._subscription is not None
        async for event in self._subscription:
            if not self._pending:
                self._target.post_message(self.Changed())
            self._pending.append(event)
        self._target.post_message(self.Closed())

    def take(self) -> list[Event]:
        events, self._pending = self._pending, []
        return events

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()

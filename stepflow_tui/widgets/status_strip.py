"""The status strip: running executions, the machine's CPU and memory (or, attached to a remote
engine, the state of the connection to it), where the data lives."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.reactive import reactive
from textual.widget import Widget

#: seconds between two looks at a remote engine's connection (a property read: nothing waits)
CONNECTION_POLL = 0.5
#: what a remote engine's `connection_state` reads as, and whether it is a warning
_CONNECTION_TEXT = {
    "connecting": ("connecting to {}…", True),
    "connected": ("connected to {}", False),
    "reconnecting": ("connection lost: reconnecting to {}…", True),
    "closed": ("disconnected from {}", True),
}


class StatusStrip(Widget):
    COMPONENT_CLASSES = {"status-strip--warning"}

    DEFAULT_CSS = """
    StatusStrip { height: 1; }
    StatusStrip > .status-strip--warning { color: $warning; text-style: bold; }
    """

    running: reactive[int] = reactive(0)
    cpu: reactive[float | None] = reactive(None)
    memory: reactive[float | None] = reactive(None)
    #: a remote engine's `connection_state`; None for an engine in this process
    connection: reactive[str | None] = reactive(None)

    def __init__(self, location: str, *, sample_machine: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        self.location = location
        self.sample_machine = sample_machine

    def on_mount(self) -> None:
        self.running = len(getattr(self.app, "running", ()))
        if self.sample_machine:
            self._sample()
            self.set_interval(2.0, self._sample)
        # a RemoteEngine (`--connect`) says how its connection is; the app's engine otherwise says nothing
        if hasattr(getattr(self.app, "client", None), "connection_state"):
            self._look_at_connection()
            self.set_interval(CONNECTION_POLL, self._look_at_connection)

    def _look_at_connection(self) -> None:
        self.connection = self.app.client.connection_state  # type: ignore[attr-defined]

    @work(thread=True, group="status-sample", exclusive=True)
    def _sample(self) -> None:
        # psutil reads /proc: a thread, never the UI loop. A thread worker only posts back.
        import psutil

        cpu = psutil.cpu_percent(interval=None)
        memory = psutil.virtual_memory().percent
        self.app.call_from_thread(self._set_machine, cpu, memory)

    def _set_machine(self, cpu: float, memory: float) -> None:
        self.cpu = cpu
        self.memory = memory

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        style = "bold cyan" if self.running else "dim"
        text.append(f" ▶ {self.running} running", style=style)
        if self.cpu is not None:
            text.append(f"  cpu {self.cpu:3.0f}%  mem {self.memory:3.0f}%")
        text.append("  ")
        if self.connection is not None:
            template, warning = _CONNECTION_TEXT.get(self.connection, ("{} " + self.connection, True))
            look = self.get_component_rich_style("status-strip--warning") if warning else "dim"
            text.append(template.format(self.location), style=look)
        else:
            text.append(self.location, style="dim")
        api_url = getattr(self.app, "api_url", None)
        if api_url:
            text.append(f"  api {api_url}", style="dim")
        return text

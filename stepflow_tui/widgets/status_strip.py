"""The status strip: running executions, the machine's CPU and memory, where the data lives."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.reactive import reactive
from textual.widget import Widget


class StatusStrip(Widget):
    DEFAULT_CSS = """
    StatusStrip { height: 1; }
    """

    running: reactive[int] = reactive(0)
    cpu: reactive[float | None] = reactive(None)
    memory: reactive[float | None] = reactive(None)

    def __init__(self, location: str, *, sample_machine: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        self.location = location
        self.sample_machine = sample_machine

    def on_mount(self) -> None:
        self.running = len(getattr(self.app, "running", ()))
        if self.sample_machine:
            self._sample()
            self.set_interval(2.0, self._sample)

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
        text.append(self.location, style="dim")
        api_url = getattr(self.app, "api_url", None)
        if api_url:
            text.append(f"  api {api_url}", style="dim")
        return text

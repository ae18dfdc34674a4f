"""A real local runner that runs no command it is given: it prints the command's text instead.

For tests whose commands come from a fuzzer (schemathesis): `command` and a workflow's `run` are
shell text, and a random one could do anything. The real engine still does everything else (the
store, markers in the printed text, steps, cancel, delete), and a process really runs: the printf
of the text, with an empty added environment, in the test's own folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.runners.base import CommandSpec, FetchError
from engine.runners.local import LocalCommand, LocalRunner


class EchoRunner(LocalRunner):
    def __init__(self, cwd: Path) -> None:
        super().__init__()
        self.cwd = cwd

    async def start(self, spec: CommandSpec) -> LocalCommand:
        text = spec.script if spec.script is not None else " ".join(spec.argv or ())
        # printf by its absolute path, without a shell, in our folder: nothing of the spec but its
        # text reaches the process (not its env: LD_PRELOAD or PATH would change what runs)
        return await super().start(CommandSpec(argv=["/usr/bin/printf", "%s\\n", text], cwd=str(self.cwd)))

    async def fetch(self, path: str, cwd: str | None, dest: Path) -> str:
        raise FetchError(f"{path}: this test runner fetches no files")

    async def glob(self, pattern: str, cwd: str | None) -> list[str]:
        return []


def echo_runner_factory(cwd: Path) -> Any:
    """An `Engine(runner_factory=...)` that gives every target (local, SSH, Docker) an EchoRunner."""
    runner = EchoRunner(cwd)
    return lambda target, config: runner

"""The runner interface: what local, SSH and Docker runners implement alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from engine.model import Stream

#: the exit codes shells give a command they cannot run (POSIX, "Command Search and Execution")
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126


class SpawnError(Exception):
    """The command could not be started (missing program, bad cwd, unreachable host...).

    The message is for people: it says what failed and where, without a traceback. `exit_code` is
    the code a shell would have given the same failure (127: not found, 126: found but not
    executable), None where no shell would have run anything (a bad working directory, no host).
    """

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class FetchError(Exception):
    """A file could not be fetched back from where the command ran."""


@dataclass(frozen=True, slots=True)
class CommandSpec:
    #: run this argv directly when given
    argv: Sequence[str] | None = None
    #: or this text through `shell -c` (bash by default; `sh` when bash is missing)
    script: str | None = None
    shell: str = "bash"
    #: added to (and overriding) the runner's base environment
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    #: the execution the command belongs to (a local command's process tag starts with it, so the
    #: processes of an execution found lost can be found after a crash)
    execution_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResourceSample:
    cpu_percent: float
    rss_bytes: int


@dataclass(frozen=True, slots=True)
class ResourceUsage:
    """A command's figures over its whole run."""

    #: CPU seconds / wall seconds, as a percentage (above 100 with more than one core busy)
    cpu_percent: float
    #: the largest RSS of one of its processes, when known
    peak_rss_bytes: int | None


class RunningCommand(Protocol):
    @property
    def pid(self) -> int | None: ...

    def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        """Chunks from stdout and stderr as they arrive, until both are closed."""

    async def wait(self) -> int:
        """The exit status: the exit code, or 128 + signal number when killed by a signal."""

    async def terminate(self, grace: float) -> None:
        """SIGTERM to the whole process group (or remote equivalent), wait up to `grace`
        seconds, then SIGKILL. Returns when nothing of it is left running."""

    def sample(self) -> ResourceSample | None:
        """CPU% and RSS of the process tree, where the runner can know them."""

    def final_usage(self) -> ResourceUsage | None:
        """Once the command is over, what the runner counted over its whole run (None where it
        cannot know)."""


class Runner(Protocol):
    async def start(self, spec: CommandSpec) -> RunningCommand:
        """Start the command; raises SpawnError with a clear message when it cannot."""

    async def fetch(self, path: str, cwd: str | None, dest: Path) -> str:
        """Copy the file at `path` (relative paths against `cwd`) to `dest`; return the resolved
        source path. Raises FetchError when missing, and when `path` escapes `cwd`."""

    async def glob(self, pattern: str, cwd: str | None) -> list[str]:
        """Paths (relative to cwd) matching a glob pattern, never outside cwd."""

    async def close(self) -> None: ...

"""What a worker reports of a job it ran (its stdout, stderr and exit code) turned into the job's
execution: log lines, and steps from the markers in them.

The report goes through the same `CommandPump` a local command's output goes through (lines, marker
parsing, the marker tree, steps), fed by `ReportedCommand`: a finished command whose output is the
report. Nothing runs here; an artifact marker is refused (the file is on the worker's machine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from engine.model import Stream
from engine.runners.base import CommandSpec, FetchError, ResourceSample, ResourceUsage, RunningCommand

#: what is kept of each stream of a job's report, in bytes of UTF-8
MAX_REPORTED_BYTES = 1024 * 1024
#: what replays are fed in (the pump reads a command's output in chunks like these)
_CHUNK = 64 * 1024


def truncate_utf8(text: str, limit: int = MAX_REPORTED_BYTES) -> str:
    """`text` when its UTF-8 fits in `limit` bytes; else its first bytes cut back to a character
    boundary, followed by a line saying how much was kept (the line counts in the limit)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    note = f"\n[stepflow: output truncated: the first {{kept}} of {len(data)} bytes are kept]\n"
    cut = max(limit - len(note.format(kept=limit).encode()), 0)
    # back to the first byte of a character: continuation bytes are 0b10xxxxxx
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    kept = data[:cut].decode("utf-8", "replace")
    return kept + note.format(kept=cut)


class ReportedCommand:
    """A command that already ended: its output is what its worker reported."""

    def __init__(self, stdout: str, stderr: str, exit_code: int) -> None:
        self._chunks = [(Stream.STDOUT, stdout.encode("utf-8", "replace")),
                        (Stream.STDERR, stderr.encode("utf-8", "replace"))]
        self._exit_code = exit_code

    @property
    def pid(self) -> int | None:
        return None

    async def output(self) -> AsyncIterator[tuple[Stream, bytes]]:
        for stream, data in self._chunks:
            for start in range(0, len(data), _CHUNK):
                yield stream, data[start:start + _CHUNK]

    async def wait(self) -> int:
        return self._exit_code

    async def terminate(self, grace: float) -> None:
        return None

    def sample(self) -> ResourceSample | None:
        return None

    def final_usage(self) -> ResourceUsage | None:
        return None


class ReportedRunner:
    """The runner of one command of a worker's: a `ReportedCommand`, or the output it streams
    (`engine.job_live.StreamedCommand`)."""

    def __init__(self, command: RunningCommand, worker: str) -> None:
        self._command = command
        self._worker = worker

    async def start(self, spec: CommandSpec) -> RunningCommand:
        return self._command

    async def fetch(self, path: str, cwd: str | None, dest: Path) -> str:
        raise FetchError(f"{path} is on the worker {self._worker}, which does not send files")

    async def glob(self, pattern: str, cwd: str | None) -> list[str]:
        return []

    async def close(self) -> None:
        return None

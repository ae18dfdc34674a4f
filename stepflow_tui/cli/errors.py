"""The CLI's exit codes and its one error type: a message for the user and the exit code to end
with. Every command module raises it; `stepflow.main.main` prints it."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code

"""Errors the engine raises to its clients. Each carries a human title and message."""

from __future__ import annotations


class EngineError(Exception):
    title = "Error"

    def __init__(self, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if title is not None:
            self.title = title


class NotFound(EngineError):
    title = "Not found"


class Conflict(EngineError):
    """The request does not fit the current state (deleting a running execution...)."""

    title = "Not possible now"


class InvalidRequest(EngineError):
    title = "Invalid request"


class ShuttingDown(EngineError):
    title = "Shutting down"

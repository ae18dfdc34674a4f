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


class StoreError(EngineError):
    """What an execution did could not be stored: it is failed rather than kept running unseen."""

    title = "Not stored"


class StoreFull(StoreError):
    """The store's disk (or the file system it is on) is full."""

    title = "No space left"

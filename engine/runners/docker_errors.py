"""What went wrong talking to a Docker daemon, in words for people."""

from __future__ import annotations

import docker.errors

from engine.runners.base import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND


def explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def start_exit_code(exc: docker.errors.APIError) -> int | None:
    """The exit code of a container or exec whose program the runtime could not start, as the
    docker CLI gives it (and shells): 127 not found, 126 found but not executable."""
    text = explain(exc)
    if "executable file not found" in text or "no such file or directory" in text:
        return EXIT_NOT_FOUND
    if "permission denied" in text or "is a directory" in text:
        return EXIT_NOT_EXECUTABLE
    return None


def daemon_reason(exc: BaseException, connect_timeout: float) -> str:
    """Why the daemon could not be reached: no such socket, refused, timed out..."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException) and arg not in seen:
                seen.append(arg)
        current = current.__cause__ or current.__context__
    text = " ".join(str(e) for e in seen)
    for candidate in seen:
        if isinstance(candidate, FileNotFoundError):
            return "no such socket"
        if isinstance(candidate, ConnectionRefusedError):
            return "connection refused"
        if isinstance(candidate, PermissionError):
            return "permission denied"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return f"timed out after {connect_timeout:g}s"
    if "No such file or directory" in text:
        return "no such socket"
    if "Connection refused" in text:
        return "connection refused"
    return str(exc)

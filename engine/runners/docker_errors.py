"""What went wrong talking to a Docker daemon, in words for people."""

from __future__ import annotations

import docker.errors


def explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


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

"""Which engine process owns a running execution, so a new engine tells a dead owner from a live one
(a `stepflow run` in one terminal while the TUI starts in another must not be marked lost)."""

from __future__ import annotations

import functools
import os
import socket

import psutil


@functools.cache
def this_engine() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{psutil.Process(pid).create_time():.2f}"


def owner_is_alive(owner: str | None) -> bool:
    """False when the owner is known dead (same host, its process gone or reused)."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text, _, created = rest.partition(":")
    if host != socket.gethostname():
        return True  # another machine's engine: not ours to judge
    try:
        proc = psutil.Process(int(pid_text))
        return f"{proc.create_time():.2f}" == created
    except (psutil.NoSuchProcess, ValueError):
        return False

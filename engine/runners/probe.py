"""Checking that a target answers (`stepflow targets test NAME`): an SSH host runs `echo ok`, a
Docker daemon answers its ping and holds the image. Every check ends within the target's connect
timeout, with a one-line verdict for people."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.runners.base import CommandSpec, SpawnError
from engine.runners.ssh_config import DEFAULT_CONNECT_TIMEOUT, SshDestination, resolve_destination
from engine.runners.targets import runner_for

#: how long a Docker daemon may take to answer, for targets that do not say
DOCKER_CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    #: what was checked and what came of it, one line
    message: str
    seconds: float


def _get(target: Any, name: str, default: Any = None) -> Any:
    if isinstance(target, Mapping):
        return target.get(name, default)
    return getattr(target, name, default)


def _ssh_destination(target: Any) -> SshDestination:
    return resolve_destination(_get(target, "host"), _get(target, "port"), _get(target, "user"))


def describe_where(target: Any) -> str:
    """Where a target runs things, as people write it: `user@host:port` (with what ~/.ssh/config
    supplies), an image, `this machine`. Blocking for SSH targets: it reads ~/.ssh/config."""
    kind = _get(target, "type", "local")
    if kind == "ssh":
        return _ssh_destination(target).where
    if kind == "docker":
        host = _get(target, "docker_host")
        return f"{_get(target, 'image')}" + (f" on {host}" if host else "")
    return "this machine"


def connect_timeout(target: Any, destination: SshDestination | None = None) -> float:
    kind = _get(target, "type", "local")
    if kind == "ssh":
        given = _get(target, "connect_timeout")
        if given is not None:
            return float(given)
        configured = destination.connect_timeout if destination is not None else None
        return configured or DEFAULT_CONNECT_TIMEOUT
    return DOCKER_CONNECT_TIMEOUT


async def probe_target(target: Any) -> Probe:
    """Connect to the target and check it can run things, within its connect timeout."""
    kind = _get(target, "type", "local")
    started = time.monotonic()
    destination = await asyncio.to_thread(_ssh_destination, target) if kind == "ssh" else None
    timeout = connect_timeout(target, destination)
    try:
        async with asyncio.timeout(timeout):
            if destination is not None:  # an SSH target
                message = await _probe_ssh(target, destination.where)
            elif kind == "docker":
                message = await asyncio.to_thread(_probe_docker, target, timeout)
            else:
                message = "this machine runs commands directly"
    except TimeoutError:
        where = destination.where if destination is not None else describe_where(target)
        return Probe(False, f"no answer from {where} within {timeout:g}s", time.monotonic() - started)
    except SpawnError as exc:
        return Probe(False, str(exc), time.monotonic() - started)
    return Probe(True, message, time.monotonic() - started)


async def _probe_ssh(target: Any, where: str) -> str:
    runner = runner_for(target)
    try:
        command = await runner.start(CommandSpec(script="echo ok", shell="sh"))
        output = b""
        async for _stream, chunk in command.output():
            output += chunk
        code = await command.wait()
    finally:
        await runner.close()
    if code != 0 or output.strip() != b"ok":
        text = output.decode(errors="replace").strip().splitlines()
        detail = f": {text[-1]}" if text else ""
        raise SpawnError(f"{where} answered, but `echo ok` exited with {code}{detail}")
    return f"{where} ran `echo ok`"


def _probe_docker(target: Any, timeout: float) -> str:
    import docker
    import docker.errors

    from engine.runners.docker import DockerRunner
    from engine.runners.docker_errors import daemon_reason

    # the runner only names things here: its threads start with its first command
    runner = DockerRunner(
        _get(target, "image"), docker_host=_get(target, "docker_host"), connect_timeout=timeout
    )
    where = runner.where
    try:
        if runner.docker_host is not None:
            client = docker.DockerClient(base_url=runner.docker_host, timeout=timeout)
        else:
            client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        raise SpawnError(
            f"cannot reach the Docker daemon at {where}: {daemon_reason(exc, timeout)}"
        ) from None
    try:
        version = client.version().get("Version", "?")
        client.images.get(runner.image_name)
    except docker.errors.ImageNotFound:
        if _get(target, "pull", False):
            return (
                f"the Docker daemon at {where} answers; {runner.image_name!r} is pulled before the first step"
            )
        raise SpawnError(
            f"the Docker daemon at {where} answers, but has no image {runner.image_name!r}"
        ) from None
    except (docker.errors.DockerException, OSError) as exc:
        raise SpawnError(
            f"cannot reach the Docker daemon at {where}: {daemon_reason(exc, timeout)}"
        ) from None
    finally:
        client.close()
    return f"the Docker daemon at {where} (version {version}) answers and has {runner.image_name!r}"

"""The runner for a target: `local`, an SSH host, or a Docker image."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from engine.runners.base import Runner, SpawnError


def _get(target: Any, name: str, default: Any = None) -> Any:
    if isinstance(target, Mapping):
        return target.get(name, default)
    return getattr(target, name, default)


def runner_for(target: Any) -> Runner:
    """A runner for a target config: an `engine.workflow.load` target (`LocalTarget`, `SshTarget`,
    `DockerTarget`) or a mapping with the same fields (from the user's targets file)."""
    kind = _get(target, "type", "local") if target is not None else "local"
    if kind == "local":
        from engine.runners.local import LocalRunner

        return LocalRunner()
    if kind == "ssh":
        from engine.runners.ssh import SshRunner

        password = None
        password_env = _get(target, "password_env")
        if password_env:
            password = os.environ.get(password_env)
            if password is None:
                raise SpawnError(f"environment variable {password_env!r} (the SSH password) is not set")
        # `known_hosts: null` turns checking off; left out, ~/.ssh/config (or ~/.ssh/known_hosts) says
        if isinstance(target, Mapping):
            check_host_keys = "known_hosts" not in target or target["known_hosts"] is not None
        else:
            check_host_keys = bool(_get(target, "check_host_keys", True))
        timeout = _get(target, "connect_timeout")
        return SshRunner(
            _get(target, "host"),
            port=_get(target, "port"),
            user=_get(target, "user"),
            key=_get(target, "key"),
            password=password,
            known_hosts=_get(target, "known_hosts"),
            check_host_keys=check_host_keys,
            trust_on_first_use=bool(_get(target, "trust_on_first_use", False)),
            jump_host=_get(target, "jump_host"),
            connect_timeout=float(timeout) if timeout is not None else None,
        )
    if kind == "docker":
        from engine.runners.docker import DockerRunner

        return DockerRunner(
            _get(target, "image"),
            docker_host=_get(target, "docker_host"),
            volumes=tuple(_get(target, "volumes") or ()),
            cpus=_get(target, "cpus"),
            memory=_get(target, "memory"),
            workdir=_get(target, "workdir"),
            reuse=bool(_get(target, "reuse", False)),
            keep=bool(_get(target, "keep", False)),
            pull=bool(_get(target, "pull", False)),
        )
    if kind == "worker":
        raise SpawnError("a worker target's commands are run by `stepflow worker` processes through a "
                         "running engine, not started from here")
    raise SpawnError(f"unknown target type {kind!r} (expected local, ssh, docker or worker)")
